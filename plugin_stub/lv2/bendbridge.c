/*
 * bendbridge LV2 plugin: audio passes through unchanged; the host's transport, eight automatable
 * macros and the audio itself are streamed to the bendbridge bridge as protocol messages.
 *
 * run() (the audio thread) never blocks, locks or allocates: it writes fixed-size records into a
 * pre-allocated single-producer/single-consumer ring (bb_ring.h) and counts a drop when the ring
 * is full. A worker thread reads the ring, encodes each record as a protocol message (bb_wire.c)
 * and sends it over a ZeroMQ PUSH socket to the bridge (BENDBRIDGE_LINK, default
 * tcp://127.0.0.1:5557). With no bridge listening nothing is sent, the ring fills and records are
 * dropped and counted; audio keeps flowing. The worker and its one socket live from instantiate
 * to cleanup, so the bridge receives every record in order across the host's deactivate and
 * activate calls; a "bye" ends the stream when the host removes the plugin.
 *
 * Position: the host's time:Position objects give the frame, speed, tempo and meter. Between them
 * the plugin keeps its own position (frame + samples run while rolling). A block is split at every
 * time:Position event; each piece starts with a transport record, so the bridge sees every jump
 * (loop, locate) and every tempo or meter change at the sample it takes effect.
 *
 * Macros: a control port holds one value per run(), and a host evaluates its automation at the
 * start of each run() (Ardour splits a cycle into several run() calls at automation points). While
 * rolling, every run() sends all eight values ("control:macro1" ...) at its first sample, so the
 * bridge sees each step at its sample and can rebuild a ramp from the values along it; while
 * stopped, only changes are sent.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lv2/atom/atom.h>
#include <lv2/atom/util.h>
#include <lv2/core/lv2.h>
#include <lv2/time/time.h>
#include <lv2/urid/urid.h>
#include <zmq.h>

#include "bb_ring.h"
#include "bb_wire.h"

#define BB_URI "urn:bendbridge:link"
#define BB_RING_LOG2 12         /* 4096 records: about 21 s of stereo audio at 48 kHz */
#define BB_SEND_BUFFER 4096     /* an encoded audio record is about 2.3 KiB */
#define BB_GIVE_UP_SECONDS 2.0  /* on deactivate, how long queued records may still be sent */

enum {
	PORT_IN_L = 0,
	PORT_IN_R = 1,
	PORT_OUT_L = 2,
	PORT_OUT_R = 3,
	PORT_MACRO_1 = 4, /* ... PORT_MACRO_1 + 7 */
	PORT_CONTROL = 12,
	PORT_DROPPED = 13,
};

typedef struct {
	LV2_URID atom_Blank, atom_Object, atom_Float, atom_Double, atom_Long, atom_Int;
	LV2_URID time_Position, time_frame, time_speed, time_beatsPerMinute, time_beatsPerBar, time_beatUnit;
	LV2_URID time_bar, time_barBeat;
} URIs;

typedef struct {
	/* ports */
	const float*              in[BB_CHANNELS];
	float*                    out[BB_CHANNELS];
	const float*              macro[BB_MACROS];
	const LV2_Atom_Sequence*  control;
	float*                    dropped_out;
	URIs                      uris;
	int64_t                   rate;
	/* the audio thread's view of the transport */
	int64_t position; /* timeline sample at the start of the next piece */
	int     known;    /* a time:Position has been seen */
	int     rolling;
	double  tempo;
	int     ts_num, ts_den;
	int     has_bar;  /* the host gave bar and beat at ``position`` (sent once, never extrapolated) */
	int64_t bar;      /* 0-based, as the host counts */
	double  bar_beat; /* time:barBeat as the host gave it */
	int     changed;  /* transport changed since the last transport record */
	float   last_macro[BB_MACROS];
	int     macros_sent; /* the macros have been sent since activate */
	/* the ring and the worker */
	BBRing      ring;
	pthread_t   worker;
	atomic_int  running;
	int         worker_started;
	char        link[512];
	char        session[65];
	char        id_prefix[9];
	uint64_t    seq, id_counter;
	uint8_t     send_buffer[BB_SEND_BUFFER];
} BB;

/* ------------------------------------------------------------------------------ audio thread */

static BBRecord* claim(BB* self, int kind, int64_t sample)
{
	BBRecord* r = bb_ring_claim(&self->ring);
	if (r) {
		r->kind = kind;
		r->sample = sample;
	}
	return r;
}

static void put_transport(BB* self)
{
	BBRecord* r = claim(self, BB_REC_TRANSPORT, self->position);
	if (!r) {
		self->has_bar = 0; /* dropped and counted; the host's numbers hold at this sample only */
		return;
	}
	r->playing = self->rolling;
	r->tempo = self->tempo;
	r->ts_num = self->ts_num;
	r->ts_den = self->ts_den;
	r->has_bar = self->has_bar;
	r->bar = self->bar + 1;
	r->bar_beat = self->bar_beat;
	bb_ring_publish(&self->ring);
	self->changed = 0;
	self->has_bar = 0; /* the host's numbers hold at this sample only */
}

/* Every macro's value at the start of this run(): always while rolling, else when one changed. */
static void put_controls(BB* self)
{
	int changed = !self->macros_sent;
	for (int i = 0; i < BB_MACROS; ++i) {
		float v = self->macro[i] ? *self->macro[i] : 0.0f;
		changed |= v != self->last_macro[i];
		self->last_macro[i] = v;
	}
	if (!changed && !(self->known && self->rolling)) {
		return;
	}
	BBRecord* r = claim(self, BB_REC_CONTROLS, self->position);
	if (!r) {
		self->macros_sent = 0; /* dropped and counted; sent again at the next run() */
		return;
	}
	memcpy(r->controls, self->last_macro, sizeof r->controls);
	bb_ring_publish(&self->ring);
	self->macros_sent = 1;
}

static void put_audio(BB* self, uint32_t from, uint32_t to)
{
	for (uint32_t s = from; s < to; s += BB_AUDIO_CHUNK) {
		uint32_t  n = (to - s < BB_AUDIO_CHUNK) ? to - s : BB_AUDIO_CHUNK;
		BBRecord* r = claim(self, BB_REC_AUDIO, self->position + (s - from));
		if (!r) {
			continue;
		}
		r->frames = (int32_t)n;
		for (int c = 0; c < BB_CHANNELS; ++c) {
			memcpy(r->audio[c], self->in[c] + s, n * sizeof(float));
		}
		bb_ring_publish(&self->ring);
	}
}

/* Move the plugin's own sample position on by n samples of rolling (until the host says where it is).
 * Bar and beat are not extrapolated: hosts count time:barBeat differently in meters whose beat is
 * not a quarter note, so only the host's own numbers are sent. */
static void advance(BB* self, uint32_t n)
{
	self->position += n;
}

/* A piece [from, to) of the block in which the transport does not change. */
static void piece(BB* self, uint32_t from, uint32_t to, int first)
{
	if (self->known && (self->changed || self->rolling)) {
		put_transport(self);
	}
	if (first) {
		put_controls(self); /* control ports hold one value per run() */
	}
	if (self->known && self->rolling) {
		put_audio(self, from, to);
		advance(self, to - from);
	}
}

static void read_position(BB* self, const LV2_Atom_Object* obj)
{
	const URIs* u = &self->uris;
	const LV2_Atom *frame = NULL, *speed = NULL, *bpm = NULL, *per_bar = NULL, *unit = NULL, *bar = NULL,
	               *bar_beat = NULL;
	lv2_atom_object_get(obj, u->time_frame, &frame, u->time_speed, &speed, u->time_beatsPerMinute, &bpm,
	                    u->time_beatsPerBar, &per_bar, u->time_beatUnit, &unit, u->time_bar, &bar, u->time_barBeat,
	                    &bar_beat, 0);
	if (frame && frame->type == u->atom_Long) {
		self->position = ((const LV2_Atom_Long*)frame)->body;
	}
	if (speed && speed->type == u->atom_Float) {
		self->rolling = ((const LV2_Atom_Float*)speed)->body != 0.0f;
	}
	if (bpm && bpm->type == u->atom_Float) {
		self->tempo = ((const LV2_Atom_Float*)bpm)->body;
	}
	if (per_bar && per_bar->type == u->atom_Float) {
		self->ts_num = (int)lrintf(((const LV2_Atom_Float*)per_bar)->body);
	}
	if (unit && unit->type == u->atom_Int) {
		self->ts_den = ((const LV2_Atom_Int*)unit)->body;
	}
	self->has_bar = bar && bar->type == u->atom_Long && bar_beat && bar_beat->type == u->atom_Float;
	if (self->has_bar) {
		self->bar = ((const LV2_Atom_Long*)bar)->body;
		self->bar_beat = ((const LV2_Atom_Float*)bar_beat)->body;
	}
	self->known = 1;
	self->changed = 1;
}

static void run(LV2_Handle instance, uint32_t n_samples)
{
	BB* self = (BB*)instance;
	for (int c = 0; c < BB_CHANNELS; ++c) {
		if (self->out[c] != self->in[c]) {
			memcpy(self->out[c], self->in[c], n_samples * sizeof(float));
		}
	}
	uint32_t done = 0;
	int      first = 1;
	if (self->control) {
		LV2_ATOM_SEQUENCE_FOREACH (self->control, ev) {
			const LV2_Atom_Object* obj = (const LV2_Atom_Object*)&ev->body;
			if ((obj->atom.type != self->uris.atom_Object && obj->atom.type != self->uris.atom_Blank) ||
			    obj->body.otype != self->uris.time_Position) {
				continue;
			}
			uint32_t t = ev->time.frames < 0 ? 0 : (uint32_t)ev->time.frames;
			if (t > n_samples) {
				t = n_samples;
			}
			if (t > done) {
				piece(self, done, t, first);
				first = 0;
				done = t;
			}
			read_position(self, obj);
		}
	}
	if (done < n_samples || first) {
		piece(self, done, n_samples, first);
	}
	if (self->dropped_out) {
		*self->dropped_out = (float)atomic_load_explicit(&self->ring.dropped, memory_order_relaxed);
	}
}

/* ------------------------------------------------------------------------------ worker thread */

static double wall_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static size_t encode(BB* self, const BBRecord* r)
{
	static const char* const names[BB_MACROS] = {"control:macro1", "control:macro2", "control:macro3",
	                                             "control:macro4", "control:macro5", "control:macro6",
	                                             "control:macro7", "control:macro8"};
	char id[40];
	snprintf(id, sizeof id, "%s-%llx", self->id_prefix, (unsigned long long)self->id_counter++);
	BBEnvelope env = {id, (int64_t)++self->seq, self->session, r->sample, self->rate, wall_clock()};
	uint8_t*   buf = self->send_buffer;
	switch (r->kind) {
	case BB_REC_TRANSPORT: {
		double tempo = r->tempo < 1.0 ? 1.0 : (r->tempo > 1000.0 ? 1000.0 : r->tempo);
		int    num = r->ts_num < 1 ? 1 : (r->ts_num > 64 ? 64 : r->ts_num);
		int    den = r->ts_den < 1 ? 1 : (r->ts_den > 64 ? 64 : r->ts_den);
		return bb_encode_transport(buf, BB_SEND_BUFFER, &env, r->playing, r->sample, tempo, num, den, 0, r->has_bar,
		                           r->bar, r->bar_beat < 0.0 ? 0.0 : r->bar_beat);
	}
	case BB_REC_CONTROLS: {
		double values[BB_MACROS];
		for (int i = 0; i < BB_MACROS; ++i) {
			values[i] = (double)r->controls[i];
		}
		return bb_encode_features(buf, BB_SEND_BUFFER, &env, r->sample, names, values, BB_MACROS);
	}
	case BB_REC_AUDIO: {
		const float* channels[BB_CHANNELS] = {r->audio[0], r->audio[1]};
		return bb_encode_audio(buf, BB_SEND_BUFFER, &env, r->sample, self->rate, channels, BB_CHANNELS,
		                       (uint32_t)r->frames);
	}
	default:
		return 0;
	}
}

static void* worker(void* arg)
{
	BB*    self = (BB*)arg;
	void*  ctx = zmq_ctx_new();
	void*  sock = zmq_socket(ctx, ZMQ_PUSH);
	int    one = 1, hwm = 10000, linger = (int)(BB_GIVE_UP_SECONDS * 1000);
	double give_up = 0.0;
	zmq_setsockopt(sock, ZMQ_IMMEDIATE, &one, sizeof one); /* queue only to a connected bridge */
	zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
	if (zmq_connect(sock, self->link) != 0) {
		fprintf(stderr, "bendbridge: cannot connect to %s: %s\n", self->link, zmq_strerror(errno));
	}
	for (;;) {
		int running = atomic_load(&self->running);
		if (!running && give_up == 0.0) {
			give_up = wall_clock() + BB_GIVE_UP_SECONDS;
		}
		const BBRecord* r = bb_ring_peek(&self->ring);
		if (!r) {
			if (!running) {
				break;
			}
			sleep_ms(1);
			continue;
		}
		size_t len = encode(self, r);
		if (len && zmq_send(sock, self->send_buffer, len, ZMQ_DONTWAIT) < 0) {
			if (!running && wall_clock() > give_up) {
				break; /* no bridge: what is left stays unsent */
			}
			sleep_ms(1); /* no bridge yet, or it is busy: keep the record, the ring bounds the backlog */
			continue;
		}
		bb_ring_release(&self->ring);
	}
	char       id[40];
	BBEnvelope env = {id, (int64_t)++self->seq, self->session, self->position, self->rate, wall_clock()};
	snprintf(id, sizeof id, "%s-%llx", self->id_prefix, (unsigned long long)self->id_counter++);
	size_t len = bb_encode_bye(self->send_buffer, BB_SEND_BUFFER, &env, "plugin removed");
	zmq_send(sock, self->send_buffer, len, ZMQ_DONTWAIT);
	zmq_close(sock); /* lingers at most BB_GIVE_UP_SECONDS to deliver what is queued */
	zmq_ctx_term(ctx);
	return NULL;
}

/* ------------------------------------------------------------------------------ LV2 */

static void random_prefix(char out[9])
{
	unsigned int v = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)out;
	FILE*        f = fopen("/dev/urandom", "rb");
	if (f) {
		if (fread(&v, sizeof v, 1, f) != 1) {
			v ^= (unsigned int)clock();
		}
		fclose(f);
	}
	snprintf(out, 9, "%08x", v);
}

static LV2_Handle instantiate(const LV2_Descriptor* d, double rate, const char* bundle, const LV2_Feature* const* features)
{
	(void)d;
	(void)bundle;
	LV2_URID_Map* map = NULL;
	for (int i = 0; features && features[i]; ++i) {
		if (!strcmp(features[i]->URI, LV2_URID__map)) {
			map = (LV2_URID_Map*)features[i]->data;
		}
	}
	if (!map) {
		fprintf(stderr, "bendbridge: the host does not provide urid:map\n");
		return NULL;
	}
	BB* self = (BB*)calloc(1, sizeof(BB));
	if (!self || bb_ring_init(&self->ring, BB_RING_LOG2) != 0) {
		free(self);
		return NULL;
	}
	URIs* u = &self->uris;
	u->atom_Blank = map->map(map->handle, LV2_ATOM__Blank);
	u->atom_Object = map->map(map->handle, LV2_ATOM__Object);
	u->atom_Float = map->map(map->handle, LV2_ATOM__Float);
	u->atom_Double = map->map(map->handle, LV2_ATOM__Double);
	u->atom_Long = map->map(map->handle, LV2_ATOM__Long);
	u->atom_Int = map->map(map->handle, LV2_ATOM__Int);
	u->time_Position = map->map(map->handle, LV2_TIME__Position);
	u->time_frame = map->map(map->handle, LV2_TIME__frame);
	u->time_speed = map->map(map->handle, LV2_TIME__speed);
	u->time_beatsPerMinute = map->map(map->handle, LV2_TIME__beatsPerMinute);
	u->time_beatsPerBar = map->map(map->handle, LV2_TIME__beatsPerBar);
	u->time_beatUnit = map->map(map->handle, LV2_TIME__beatUnit);
	u->time_bar = map->map(map->handle, LV2_TIME__bar);
	u->time_barBeat = map->map(map->handle, LV2_TIME__barBeat);
	self->rate = (int64_t)llround(rate);
	self->tempo = 120.0;
	self->ts_num = 4;
	self->ts_den = 4;
	const char* link = getenv("BENDBRIDGE_LINK");
	const char* session = getenv("BENDBRIDGE_SESSION");
	snprintf(self->link, sizeof self->link, "%s", link && *link ? link : "tcp://127.0.0.1:5557");
	snprintf(self->session, sizeof self->session, "%s", session && *session ? session : "plugin");
	random_prefix(self->id_prefix);
	atomic_store(&self->running, 1);
	self->worker_started = pthread_create(&self->worker, NULL, worker, self) == 0;
	return (LV2_Handle)self;
}

static void connect_port(LV2_Handle instance, uint32_t port, void* data)
{
	BB* self = (BB*)instance;
	if (port == PORT_IN_L || port == PORT_IN_R) {
		self->in[port - PORT_IN_L] = (const float*)data;
	} else if (port == PORT_OUT_L || port == PORT_OUT_R) {
		self->out[port - PORT_OUT_L] = (float*)data;
	} else if (port >= PORT_MACRO_1 && port < PORT_MACRO_1 + BB_MACROS) {
		self->macro[port - PORT_MACRO_1] = (const float*)data;
	} else if (port == PORT_CONTROL) {
		self->control = (const LV2_Atom_Sequence*)data;
	} else if (port == PORT_DROPPED) {
		self->dropped_out = (float*)data;
	}
}

static void activate(LV2_Handle instance)
{
	BB* self = (BB*)instance;
	self->macros_sent = 0; /* every macro's value is sent again at the first block */
	self->changed = 1;
}

static void deactivate(LV2_Handle instance)
{
	(void)instance;
}

static void cleanup(LV2_Handle instance)
{
	BB* self = (BB*)instance;
	atomic_store(&self->running, 0);
	if (self->worker_started) {
		pthread_join(self->worker, NULL);
	}
	unsigned long long dropped = (unsigned long long)atomic_load(&self->ring.dropped);
	if (dropped) {
		fprintf(stderr, "bendbridge: %llu records dropped (the bridge at %s was away or slow)\n", dropped, self->link);
	}
	bb_ring_free(&self->ring);
	free(self);
}

static const void* extension_data(const char* uri)
{
	(void)uri;
	return NULL;
}

static const LV2_Descriptor descriptor = {BB_URI, instantiate, connect_port, activate, run, deactivate, cleanup, extension_data};

LV2_SYMBOL_EXPORT const LV2_Descriptor* lv2_descriptor(uint32_t index)
{
	return index == 0 ? &descriptor : NULL;
}
