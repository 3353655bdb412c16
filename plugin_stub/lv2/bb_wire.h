/*
 * bendbridge wire encoding in C: the protocol's msgpack envelopes for the messages a plugin sends.
 *
 * The bytes are exactly what bendbridge.protocol.encode writes for the same message and envelope
 * (same map key order, the smallest msgpack integer and string forms, floats as float64, arrays as
 * msgpack extension type 1 holding [dtype, shape, raw little-endian bytes]); the Python tests call
 * these functions through ctypes and compare byte for byte.
 *
 * Every function writes into a caller's buffer and returns the number of bytes written, or 0 when
 * the buffer is too small. Nothing here allocates.
 */
#ifndef BB_WIRE_H
#define BB_WIRE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define BB_EXPORT __attribute__((visibility("default")))
#else
#define BB_EXPORT
#endif

#define BB_PROTOCOL_MAJOR 1
#define BB_PROTOCOL_MINOR 3

/* The envelope around every message: see bendbridge.protocol.messages.Envelope. */
typedef struct {
	const char* id;      /* unique message id, at most 64 bytes */
	int64_t     seq;     /* sequence number, >= 0 */
	const char* session; /* session name, at most 64 bytes */
	int64_t     pos;     /* timeline position in samples the message describes */
	int64_t     rate;    /* the host's sample rate, Hz */
	double      wall;    /* sender's wall clock, Unix seconds */
} BBEnvelope;

/* transport; with has_bar, also the bar (1-based) and the position in it in beats (0-based), protocol 1.2. */
BB_EXPORT size_t bb_encode_transport(uint8_t* buf, size_t cap, const BBEnvelope* env, int playing, int64_t sample,
                                     double tempo, int64_t ts_num, int64_t ts_den, int looping, int has_bar, int64_t bar,
                                     double bar_beat);

/* feature_frame with n features {names[i]: values[i]}, in that order: how a plugin reports its
 * parameters ("param:macro1" for an event at its sample, "control:macro1" for a control port's value). */
BB_EXPORT size_t bb_encode_features(uint8_t* buf, size_t cap, const BBEnvelope* env, int64_t sample,
                                    const char* const* names, const double* values, uint32_t n);

/* audio_block: float32 [channels, frames], channel after channel. */
BB_EXPORT size_t bb_encode_audio(uint8_t* buf, size_t cap, const BBEnvelope* env, int64_t sample, int64_t rate,
                                 const float* const* channels, uint32_t n_channels, uint32_t frames);

BB_EXPORT size_t bb_encode_bye(uint8_t* buf, size_t cap, const BBEnvelope* env, const char* reason);

#ifdef __cplusplus
}
#endif

#endif /* BB_WIRE_H */
