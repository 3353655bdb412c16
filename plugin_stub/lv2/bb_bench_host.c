/*
 * A minimal LV2 host for the bendbridge plugin: measures what run() costs and checks that audio
 * passes through unchanged, with whatever bridge (or none) listens at BENDBRIDGE_LINK.
 *
 *   bb_bench_host PLUGIN.so RATE BLOCK BLOCKS [REALTIME]
 *
 * It loads the plugin's shared library, instantiates urn:bendbridge:link with a urid:map, feeds
 * BLOCKS blocks of BLOCK frames of a stereo test signal at RATE Hz with a time:Position (120 BPM,
 * 4/4, bar and beat) at the start of every block and macro 1 stepping every block, and times
 * every run() with CLOCK_MONOTONIC. REALTIME=1 paces the blocks at the audio rate (as a host
 * would) instead of running them back to back. It prints one JSON object: run() nanoseconds per
 * block (median, p99, max), blocks whose output differed from the input, and the plugin's count
 * of dropped records (its "dropped" output port) after the last block.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lv2/atom/forge.h>
#include <lv2/core/lv2.h>
#include <lv2/time/time.h>
#include <lv2/urid/urid.h>

#define MAX_URIS 64
#define N_PORTS 14
#define ATOM_CAPACITY 1024

static const char* uris[MAX_URIS];
static uint32_t    n_uris;

static LV2_URID map_uri(LV2_URID_Map_Handle handle, const char* uri)
{
	(void)handle;
	for (uint32_t i = 0; i < n_uris; ++i) {
		if (!strcmp(uris[i], uri)) {
			return i + 1;
		}
	}
	if (n_uris == MAX_URIS) {
		return 0;
	}
	uris[n_uris++] = uri;
	return n_uris;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_i64(const void* a, const void* b)
{
	int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
	return (x > y) - (x < y);
}

/* The control port's sequence: one time:Position at frame 0 of the block. */
static void write_position(LV2_Atom_Forge* forge, uint8_t* buf, int64_t frame, double rate)
{
	double beats = frame / rate * 2.0; /* 120 BPM */
	lv2_atom_forge_set_buffer(forge, buf, ATOM_CAPACITY);
	LV2_Atom_Forge_Frame seq, obj;
	lv2_atom_forge_sequence_head(forge, &seq, 0);
	lv2_atom_forge_frame_time(forge, 0);
	lv2_atom_forge_object(forge, &obj, 0, map_uri(NULL, LV2_TIME__Position));
	lv2_atom_forge_key(forge, map_uri(NULL, LV2_TIME__frame));
	lv2_atom_forge_long(forge, frame);
	lv2_atom_forge_key(forge, map_uri(NULL, LV2_TIME__speed));
	lv2_atom_forge_float(forge, 1.0f);
	lv2_atom_forge_key(forge, map_uri(NULL, LV2_TIME__beatsPerMinute));
	lv2_atom_forge_float(forge, 120.0f);
	lv2_atom_forge_key(forge, map_uri(NULL, LV2_TIME__beatsPerBar));
	lv2_atom_forge_float(forge, 4.0f);
	lv2_atom_forge_key(forge, map_uri(NULL, LV2_TIME__beatUnit));
	lv2_atom_forge_int(forge, 4);
	lv2_atom_forge_key(forge, map_uri(NULL, LV2_TIME__bar));
	lv2_atom_forge_long(forge, (int64_t)(beats / 4.0));
	lv2_atom_forge_key(forge, map_uri(NULL, LV2_TIME__barBeat));
	lv2_atom_forge_float(forge, (float)fmod(beats, 4.0));
	lv2_atom_forge_pop(forge, &obj);
	lv2_atom_forge_pop(forge, &seq);
}

int main(int argc, char** argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s PLUGIN.so RATE BLOCK BLOCKS [REALTIME]\n", argv[0]);
		return 2;
	}
	double   rate = atof(argv[2]);
	uint32_t block = (uint32_t)atoi(argv[3]);
	long     blocks = atol(argv[4]);
	int      realtime = argc > 5 && atoi(argv[5]);
	if (rate < 8000 || block < 1 || block > 65536 || blocks < 1) {
		fprintf(stderr, "bad RATE, BLOCK or BLOCKS\n");
		return 2;
	}
	void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "%s\n", dlerror());
		return 1;
	}
	LV2_Descriptor_Function get = (LV2_Descriptor_Function)dlsym(lib, "lv2_descriptor");
	const LV2_Descriptor*   d = get ? get(0) : NULL;
	if (!d || strcmp(d->URI, "urn:bendbridge:link")) {
		fprintf(stderr, "no urn:bendbridge:link in %s\n", argv[1]);
		return 1;
	}
	LV2_URID_Map        map = {NULL, map_uri};
	LV2_Feature         map_feature = {LV2_URID__map, &map};
	const LV2_Feature*  features[] = {&map_feature, NULL};
	LV2_Handle          h = d->instantiate(d, rate, "", features);
	if (!h) {
		fprintf(stderr, "instantiate failed\n");
		return 1;
	}
	float*    in[2] = {calloc(block, sizeof(float)), calloc(block, sizeof(float))};
	float*    out[2] = {calloc(block, sizeof(float)), calloc(block, sizeof(float))};
	float     macros[8] = {0}, dropped = 0;
	uint8_t*  atoms = aligned_alloc(64, ATOM_CAPACITY);
	int64_t*  cost = calloc((size_t)blocks, sizeof(int64_t));
	LV2_Atom_Forge forge;
	lv2_atom_forge_init(&forge, &map);
	d->connect_port(h, 0, in[0]);
	d->connect_port(h, 1, in[1]);
	d->connect_port(h, 2, out[0]);
	d->connect_port(h, 3, out[1]);
	for (uint32_t i = 0; i < 8; ++i) {
		d->connect_port(h, 4 + i, &macros[i]);
	}
	d->connect_port(h, 12, atoms);
	d->connect_port(h, 13, &dropped);
	if (d->activate) {
		d->activate(h);
	}
	long    differing = 0;
	int64_t start = now_ns();
	for (long b = 0; b < blocks; ++b) {
		int64_t frame = (int64_t)b * block;
		for (uint32_t i = 0; i < block; ++i) {
			in[0][i] = (float)sin(2.0 * M_PI * 440.0 * (double)(frame + i) / rate);
			in[1][i] = -in[0][i];
		}
		macros[0] = (float)((b * b) % 97) / 97.0f; /* a new value every block, no three on a line */
		write_position(&forge, atoms, frame, rate);
		int64_t t0 = now_ns();
		d->run(h, block);
		cost[b] = now_ns() - t0;
		differing += memcmp(in[0], out[0], block * sizeof(float)) || memcmp(in[1], out[1], block * sizeof(float));
		if (realtime) {
			int64_t due = start + (int64_t)((double)(b + 1) * block / rate * 1e9);
			int64_t wait = due - now_ns();
			if (wait > 0) {
				struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
				nanosleep(&ts, NULL);
			}
		}
	}
	float dropped_at_end = dropped;
	if (d->deactivate) {
		d->deactivate(h);
	}
	d->cleanup(h);
	qsort(cost, (size_t)blocks, sizeof(int64_t), cmp_i64);
	printf("{\"blocks\": %ld, \"block\": %u, \"rate\": %.0f, \"ns_median\": %lld, \"ns_p99\": %lld, \"ns_max\": %lld, "
	       "\"differing_blocks\": %ld, \"dropped\": %.0f}\n",
	       blocks, block, rate, (long long)cost[blocks / 2], (long long)cost[(blocks * 99) / 100],
	       (long long)cost[blocks - 1], differing, dropped_at_end);
	free(cost);
	free(atoms);
	for (int c = 0; c < 2; ++c) {
		free(in[c]);
		free(out[c]);
	}
	dlclose(lib);
	return 0;
}
