-- Headless Ardour 7 on a JACK server as the JACK transport source and timebase master.
-- The RC config beside it (HOME/.config/ardour7/config) makes "JACK Transport" Ardour's transport
-- master; with external sync on, Ardour's own roll, locate and stop requests move JACK transport,
-- and Ardour publishes bar|beat|tick, tempo and meter from its tempo map. The session: 100 BPM in
-- 3/4, 130 BPM from bar 9 (quarter 24, 14.4 s). It saves the session (the bridge reads its tempo
-- map), prints READY, then: rolls 2 s from 0, locates to 13 s and rolls 3 s through the tempo
-- change, stops, and prints DONE. Environment: BB_SESSION_DIR.
local dir = os.getenv("BB_SESSION_DIR")
assert(AudioEngine:set_backend("JACK", "", ""), "no JACK backend")
assert(AudioEngine:start(false) == 0, "the JACK engine did not start")
assert(create_session(dir, "session", 48000), "no session")

local function q(quarters) return Temporal.timepos_t.from_ticks(quarters * 1920) end
local tm = Temporal.TempoMap.write_copy()
tm:set_tempo(Temporal.Tempo(100, 100, 4), q(0))
tm:set_meter(Temporal.Meter(3, 4), q(0))
tm:set_tempo(Temporal.Tempo(130, 130, 4), q(24))
Temporal.TempoMap.update(tm)
Session:cfg():set_external_sync(true)
Session:save_state("", false, false, false, false, false)
print("READY")
io.stdout:flush()

local function wait(seconds) ARDOUR.LuaAPI.usleep(math.floor(seconds * 1000000)) end
wait(1.0)
Session:request_roll(ARDOUR.TransportRequestSource.TRS_UI)
wait(2.0)
Session:request_locate(13 * 48000, false, ARDOUR.LocateTransportDisposition.MustRoll, ARDOUR.TransportRequestSource.TRS_UI)
wait(3.0)
Session:request_stop(false, false, ARDOUR.TransportRequestSource.TRS_UI)
wait(0.5)
print("DONE")
io.stdout:flush()
