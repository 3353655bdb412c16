/*
 * A single-producer single-consumer ring of fixed-size records, allocated once.
 *
 * The audio thread (producer) claims a slot, fills it and publishes it; the worker thread
 * (consumer) reads the oldest published slot and releases it. Neither side ever waits, locks or
 * allocates: a full ring makes the producer drop the record (and count it).
 */
#ifndef BB_RING_H
#define BB_RING_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BB_CHANNELS 2
#define BB_AUDIO_CHUNK 256 /* audio frames per record: a block is split into chunks of this size */
#define BB_MACROS 8         /* control ports, all sent in one record */

enum { BB_REC_TRANSPORT = 1, BB_REC_CONTROLS = 2, BB_REC_AUDIO = 3 };

typedef struct {
	int32_t kind;
	int32_t frames;  /* audio frames in this record (BB_REC_AUDIO) */
	int64_t sample;  /* timeline position in samples */
	double  tempo;   /* BB_REC_TRANSPORT: quarter notes per minute */
	int32_t playing; /* BB_REC_TRANSPORT */
	int32_t ts_num;  /* BB_REC_TRANSPORT: beats per bar */
	int32_t ts_den;  /* BB_REC_TRANSPORT: beat unit */
	int32_t has_bar; /* BB_REC_TRANSPORT: the host gave the bar and beat */
	int64_t bar;     /* BB_REC_TRANSPORT: bar, 1-based */
	double  bar_beat; /* BB_REC_TRANSPORT: position in the bar, beats of the meter's unit, 0-based */
	float   controls[BB_MACROS]; /* BB_REC_CONTROLS: every macro's value for this run() */
	float   audio[BB_CHANNELS][BB_AUDIO_CHUNK];
} BBRecord;

typedef struct {
	BBRecord*        slots;
	uint32_t         mask; /* capacity - 1, capacity a power of two */
	_Atomic uint64_t head; /* next slot the producer fills */
	_Atomic uint64_t tail; /* next slot the consumer reads */
	_Atomic uint64_t dropped;
} BBRing;

/* Allocate a ring of 2^log2_capacity records (outside the audio thread). 0 on success. Every page
 * is written here, so the audio thread never takes a page fault on a fresh slot. */
static inline int bb_ring_init(BBRing* r, unsigned log2_capacity)
{
	size_t n = (size_t)1 << log2_capacity;
	r->slots = (BBRecord*)malloc(n * sizeof(BBRecord));
	if (!r->slots) {
		return -1;
	}
	memset(r->slots, 0, n * sizeof(BBRecord));
	r->mask = (uint32_t)(n - 1);
	atomic_init(&r->head, 0);
	atomic_init(&r->tail, 0);
	atomic_init(&r->dropped, 0);
	return 0;
}

static inline void bb_ring_free(BBRing* r)
{
	free(r->slots);
	r->slots = NULL;
}

/* Producer: a slot to fill, or NULL (counted as a drop) when the ring is full. */
static inline BBRecord* bb_ring_claim(BBRing* r)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	if (head - tail > r->mask) {
		atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
		return NULL;
	}
	return &r->slots[head & r->mask];
}

/* Producer: make the claimed slot visible to the consumer. */
static inline void bb_ring_publish(BBRing* r)
{
	atomic_fetch_add_explicit(&r->head, 1, memory_order_release);
}

/* Consumer: the oldest published record, or NULL when empty. */
static inline const BBRecord* bb_ring_peek(BBRing* r)
{
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	return head == tail ? NULL : &r->slots[tail & r->mask];
}

/* Consumer: release the record returned by bb_ring_peek. */
static inline void bb_ring_release(BBRing* r)
{
	atomic_fetch_add_explicit(&r->tail, 1, memory_order_release);
}

#endif /* BB_RING_H */
