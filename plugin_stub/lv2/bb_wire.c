/*
 * bendbridge wire encoding: msgpack written by hand, byte-identical to bendbridge.protocol.encode.
 * See bb_wire.h. msgpack format: https://github.com/msgpack/msgpack/blob/master/spec.md
 */
#include "bb_wire.h"

#include <string.h>

typedef struct {
	uint8_t* p;
	size_t   n;
	size_t   cap;
	int      overflow;
} Out;

static void put(Out* o, const void* src, size_t len)
{
	if (o->overflow || o->n + len > o->cap) {
		o->overflow = 1;
		return;
	}
	memcpy(o->p + o->n, src, len);
	o->n += len;
}

static void put_byte(Out* o, uint8_t b) { put(o, &b, 1); }

static void put_be(Out* o, uint64_t v, int bytes)
{
	uint8_t b[8];
	for (int i = 0; i < bytes; ++i) {
		b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	}
	put(o, b, (size_t)bytes);
}

/* Integers in their smallest form, as msgpack-python packs a Python int. */
static void put_int(Out* o, int64_t v)
{
	if (v >= 0) {
		if (v < 128) {
			put_byte(o, (uint8_t)v);
		} else if (v < 256) {
			put_byte(o, 0xcc);
			put_be(o, (uint64_t)v, 1);
		} else if (v < 65536) {
			put_byte(o, 0xcd);
			put_be(o, (uint64_t)v, 2);
		} else if (v < 4294967296LL) {
			put_byte(o, 0xce);
			put_be(o, (uint64_t)v, 4);
		} else {
			put_byte(o, 0xcf);
			put_be(o, (uint64_t)v, 8);
		}
	} else if (v >= -32) {
		put_byte(o, (uint8_t)(0xe0 | (v + 32)));
	} else if (v >= -128) {
		put_byte(o, 0xd0);
		put_be(o, (uint64_t)(uint8_t)(int8_t)v, 1);
	} else if (v >= -32768) {
		put_byte(o, 0xd1);
		put_be(o, (uint64_t)(uint16_t)(int16_t)v, 2);
	} else if (v >= -2147483648LL) {
		put_byte(o, 0xd2);
		put_be(o, (uint64_t)(uint32_t)(int32_t)v, 4);
	} else {
		put_byte(o, 0xd3);
		put_be(o, (uint64_t)v, 8);
	}
}

static void put_double(Out* o, double d)
{
	uint64_t bits;
	memcpy(&bits, &d, sizeof bits);
	put_byte(o, 0xcb);
	put_be(o, bits, 8);
}

static void put_bool(Out* o, int b) { put_byte(o, b ? 0xc3 : 0xc2); }

static void put_str(Out* o, const char* s)
{
	size_t len = strlen(s);
	if (len < 32) {
		put_byte(o, (uint8_t)(0xa0 | len));
	} else if (len < 256) {
		put_byte(o, 0xd9);
		put_be(o, len, 1);
	} else if (len < 65536) {
		put_byte(o, 0xda);
		put_be(o, len, 2);
	} else {
		put_byte(o, 0xdb);
		put_be(o, len, 4);
	}
	put(o, s, len);
}

static void put_map(Out* o, uint32_t n)
{
	if (n < 16) {
		put_byte(o, (uint8_t)(0x80 | n));
	} else {
		put_byte(o, 0xde);
		put_be(o, n, 2);
	}
}

static void put_array(Out* o, uint32_t n)
{
	if (n < 16) {
		put_byte(o, (uint8_t)(0x90 | n));
	} else {
		put_byte(o, 0xdc);
		put_be(o, n, 2);
	}
}

static void put_bin_header(Out* o, size_t len)
{
	if (len < 256) {
		put_byte(o, 0xc4);
		put_be(o, len, 1);
	} else if (len < 65536) {
		put_byte(o, 0xc5);
		put_be(o, len, 2);
	} else {
		put_byte(o, 0xc6);
		put_be(o, len, 4);
	}
}

static void put_ext_header(Out* o, int8_t type, size_t len)
{
	static const uint8_t fixext[17] = {0, 0xd4, 0xd5, 0, 0xd6, 0, 0, 0, 0xd7, 0, 0, 0, 0, 0, 0, 0, 0xd8};
	if (len <= 16 && fixext[len]) {
		put_byte(o, fixext[len]);
	} else if (len < 256) {
		put_byte(o, 0xc7);
		put_be(o, len, 1);
	} else if (len < 65536) {
		put_byte(o, 0xc8);
		put_be(o, len, 2);
	} else {
		put_byte(o, 0xc9);
		put_be(o, len, 4);
	}
	put_byte(o, (uint8_t)type);
}

/* {"v": [1, 1], "type": …, "id", "seq", "session", "pos", "rate", "wall", "body": <caller>} */
static void put_envelope(Out* o, const BBEnvelope* e, const char* type)
{
	put_map(o, 9);
	put_str(o, "v");
	put_array(o, 2);
	put_int(o, BB_PROTOCOL_MAJOR);
	put_int(o, BB_PROTOCOL_MINOR);
	put_str(o, "type");
	put_str(o, type);
	put_str(o, "id");
	put_str(o, e->id);
	put_str(o, "seq");
	put_int(o, e->seq);
	put_str(o, "session");
	put_str(o, e->session);
	put_str(o, "pos");
	put_int(o, e->pos);
	put_str(o, "rate");
	put_int(o, e->rate);
	put_str(o, "wall");
	put_double(o, e->wall);
	put_str(o, "body");
}

static size_t done(Out* o) { return o->overflow ? 0 : o->n; }

size_t bb_encode_transport(uint8_t* buf, size_t cap, const BBEnvelope* env, int playing, int64_t sample,
                           double tempo, int64_t ts_num, int64_t ts_den, int looping, int has_bar, int64_t bar,
                           double bar_beat)
{
	Out o = {buf, 0, cap, 0};
	put_envelope(&o, env, "transport");
	put_map(&o, has_bar ? 8 : 6);
	put_str(&o, "playing");
	put_bool(&o, playing);
	put_str(&o, "sample");
	put_int(&o, sample);
	put_str(&o, "tempo");
	put_double(&o, tempo);
	put_str(&o, "ts_num");
	put_int(&o, ts_num);
	put_str(&o, "ts_den");
	put_int(&o, ts_den);
	put_str(&o, "looping");
	put_bool(&o, looping);
	if (has_bar) {
		put_str(&o, "bar");
		put_int(&o, bar);
		put_str(&o, "bar_beat");
		put_double(&o, bar_beat);
	}
	return done(&o);
}

size_t bb_encode_features(uint8_t* buf, size_t cap, const BBEnvelope* env, int64_t sample, const char* const* names,
                          const double* values, uint32_t n)
{
	Out o = {buf, 0, cap, 0};
	put_envelope(&o, env, "feature_frame");
	put_map(&o, 2);
	put_str(&o, "sample");
	put_int(&o, sample);
	put_str(&o, "features");
	put_map(&o, n);
	for (uint32_t i = 0; i < n; ++i) {
		put_str(&o, names[i]);
		put_double(&o, values[i]);
	}
	return done(&o);
}

/* The extension payload: msgpack ["float32", [channels, frames], <raw little-endian bytes>]. */
static size_t array_payload_size(uint32_t n_channels, uint32_t frames)
{
	size_t raw = (size_t)n_channels * frames * sizeof(float);
	uint8_t scratch[64];
	Out     head = {scratch, 0, sizeof scratch, 0};
	put_array(&head, 3);
	put_str(&head, "float32");
	put_array(&head, 2);
	put_int(&head, n_channels);
	put_int(&head, frames);
	put_bin_header(&head, raw);
	return head.n + raw;
}

size_t bb_encode_audio(uint8_t* buf, size_t cap, const BBEnvelope* env, int64_t sample, int64_t rate,
                       const float* const* channels, uint32_t n_channels, uint32_t frames)
{
	Out o = {buf, 0, cap, 0};
	put_envelope(&o, env, "audio_block");
	put_map(&o, 3);
	put_str(&o, "sample");
	put_int(&o, sample);
	put_str(&o, "rate");
	put_int(&o, rate);
	put_str(&o, "data");
	put_ext_header(&o, 1, array_payload_size(n_channels, frames));
	put_array(&o, 3);
	put_str(&o, "float32");
	put_array(&o, 2);
	put_int(&o, n_channels);
	put_int(&o, frames);
	put_bin_header(&o, (size_t)n_channels * frames * sizeof(float));
	for (uint32_t c = 0; c < n_channels; ++c) {
		put(&o, channels[c], frames * sizeof(float)); /* x86-64 and ARM hosts are little-endian */
	}
	return done(&o);
}

size_t bb_encode_bye(uint8_t* buf, size_t cap, const BBEnvelope* env, const char* reason)
{
	Out o = {buf, 0, cap, 0};
	put_envelope(&o, env, "bye");
	put_map(&o, 1);
	put_str(&o, "reason");
	put_str(&o, reason);
	return done(&o);
}
