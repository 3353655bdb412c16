-- A test session in headless Ardour 7 (ardour7-lua): a tempo map with a non-integer tempo, a
-- ramp and two meter changes; a stereo track through the bendbridge LV2 plugin, with step and
-- ramp automation on two macros, playing a take recorded from the dummy backend's test signals
-- (so every pass plays the same audio); a second, silent track with gain, trim, pan and mute
-- automation. After the recording pass it rolls faster than real time with a locate while
-- rolling, saves, exports the master (freewheeling: the last pass over every sample), writes
-- Ardour's own tempo map and automation at a grid of samples to BB_SESSION_DIR/ardour_says.txt
-- ("MAP sample quarters bars|beats|ticks", "AUT lane<TAB>sample<TAB>value") and prints DONE.
-- Environment: BB_SESSION_DIR, BB_RATE, BB_EXPORT_END (samples), BB_PRESET (export preset id).

local dir = os.getenv("BB_SESSION_DIR")
local rate = tonumber(os.getenv("BB_RATE"))
local export_end = tonumber(os.getenv("BB_EXPORT_END"))

local backend = AudioEngine:set_backend("None (Dummy)", "", "")
backend:set_device_name("Sine Wave")
backend:set_driver("20x Speed")
backend:set_sample_rate(rate)
backend:set_buffer_size(1024)
assert(AudioEngine:start(false) == 0, "the dummy audio engine did not start")
assert(create_session(dir, "session", rate), "no session")
ARDOUR.config():set_default_automation_time_domain(Temporal.TimeDomain.AudioTime)

local function wait_past(sample)
  for _ = 1, 1000 do
    if Session:transport_sample() > sample then return true end
    ARDOUR.LuaAPI.usleep(10000)
  end
  return false
end

local function wait_stopped()
  for _ = 1, 500 do
    if Session:transport_stopped() then return true end
    ARDOUR.LuaAPI.usleep(10000)
  end
  return false
end

local function q(quarters) return Temporal.timepos_t.from_ticks(quarters * 1920) end
local tm = Temporal.TempoMap.write_copy()
tm:set_tempo(Temporal.Tempo(91.3, 91.3, 4), q(8))
tm:set_meter(Temporal.Meter(3, 4), q(16))   -- bar 5
tm:set_meter(Temporal.Meter(7, 8), q(28))   -- bar 9
tm:set_tempo(Temporal.Tempo(140, 140, 4), q(42))
tm:set_tempo(Temporal.Tempo(91.3, 140, 4), q(35)) -- a ramp up to the tempo after it (added last)
Temporal.TempoMap.update(tm)

local function control(proc, port)
  return proc:to_insert():to_automatable():automation_control(
    Evoral.Parameter(ARDOUR.AutomationType.PluginAutomation, 0, port), false)
end

local function fill(cl, style, points)
  cl:set_interpolation(style)
  for _, p in ipairs(points) do cl:add(Temporal.timepos_t(p[1]), p[2], false, true) end
end

-- track 1: the song through the plugin
local song = Session:new_audio_track(2, 2, nil, 1, "Song", ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true):front()
local plugin = ARDOUR.LuaAPI.new_plugin(Session, "urn:bendbridge:link", ARDOUR.PluginType.LV2, "")
assert(not plugin:isnil(), "the bendbridge LV2 plugin was not found (LV2_PATH)")
song:add_processor_by_index(plugin, 0, nil, true)
local _, step, _ = ARDOUR.LuaAPI.plugin_automation(plugin, 0)   -- macro1
fill(step, Evoral.InterpolationStyle.Discrete,
     {{0, 0.0}, {120013, 0.5}, {348007, 1.0}, {580811, 0.25}, {960001, 0.75}})
local _, ramp, _ = ARDOUR.LuaAPI.plugin_automation(plugin, 1)   -- macro2
fill(ramp, Evoral.InterpolationStyle.Linear, {{0, 0.0}, {48000, 0.0}, {432000, 1.0}, {1200000, 0.2}})
for port = 4, 5 do control(plugin, port):set_automation_state(ARDOUR.AutoState.Play) end

-- a take of the test signals, so that every pass plays the same audio from disk
song:rec_enable_control():set_value(1, PBD.GroupControlDisposition.NoGroup)
Session:maybe_enable_record(false)
Session:request_roll(ARDOUR.TransportRequestSource.TRS_UI)
assert(wait_past(export_end + 96000), "the recording pass did not roll")
Session:request_stop(false, false, ARDOUR.TransportRequestSource.TRS_UI)
assert(wait_stopped(), "the recording pass did not stop")
Session:disable_record(false, false)
song:rec_enable_control():set_value(0, PBD.GroupControlDisposition.NoGroup)
song:monitoring_control():set_value(ARDOUR.MonitorChoice.MonitorDisk, PBD.GroupControlDisposition.NoGroup)
assert(song:playlist():n_regions() == 1, "no take was recorded")

-- track 2: silent, for the route's own lanes
local levels = Session:new_audio_track(2, 2, nil, 1, "Levels", ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true):front()
levels:input():disconnect_all(nil)
local gain = levels:gain_control()
fill(gain:alist(), Evoral.InterpolationStyle.Exponential ~= nil and Evoral.InterpolationStyle.Exponential or Evoral.InterpolationStyle.Linear,
     {{0, 1.0}, {240000, 0.25}, {720000, 1.8}, {1100000, 0.5}})
gain:set_automation_state(ARDOUR.AutoState.Play)
local trim = levels:trim_control()
fill(trim:alist(), trim:alist():interpolation(), {{0, 1.0}, {500000, 4.0}, {900000, 0.2}})
trim:set_automation_state(ARDOUR.AutoState.Play)
local pan = levels:pan_azimuth_control()
fill(pan:alist(), Evoral.InterpolationStyle.Linear, {{0, 0.5}, {300000, 0.0}, {800000, 1.0}})
pan:set_automation_state(ARDOUR.AutoState.Play)
local mute = levels:mute_control()
fill(mute:alist(), Evoral.InterpolationStyle.Discrete, {{0, 0}, {400000, 1}, {700000, 0}})
mute:set_automation_state(ARDOUR.AutoState.Play)

-- a roll with a locate while rolling
Session:request_locate(96000, false, ARDOUR.LocateTransportDisposition.MustStop, ARDOUR.TransportRequestSource.TRS_UI)
ARDOUR.LuaAPI.usleep(200000)
Session:request_roll(ARDOUR.TransportRequestSource.TRS_UI)
assert(wait_past(300000), "the transport did not roll")
Session:request_locate(150000, false, ARDOUR.LocateTransportDisposition.MustRoll, ARDOUR.TransportRequestSource.TRS_UI)
ARDOUR.LuaAPI.usleep(50000)
assert(wait_past(250000), "the transport did not roll after the locate")
Session:request_stop(false, false, ARDOUR.TransportRequestSource.TRS_UI)
assert(wait_stopped(), "the transport did not stop")

assert(Session:save_state("", false, false, false, false, false) == 0, "session not saved")

local export = Session:simple_export()
export:set_folder(dir .. "/export")
export:set_name("master")
export:set_range(0, export_end)  -- [start, end): export_end samples
assert(export:set_preset(os.getenv("BB_PRESET")), "no export preset")
assert(export:run_export(), "export failed")

-- Ardour's own answers, at a grid of samples
local says = assert(io.open(dir .. "/ardour_says.txt", "w"))
local map = Temporal.TempoMap.read()
local lanes = {{"Song/bendbridge link/macro1", step}, {"Song/bendbridge link/macro2", ramp},
               {"Levels/gain", gain:alist()}, {"Levels/trim", trim:alist()},
               {"Levels/pan", pan:alist()}, {"Levels/mute", mute:alist()}}
for s = 0, export_end - 1, 2400 do
  local pos = Temporal.timepos_t(s)
  local bbt = map:bbt_at(pos)
  says:write(string.format("MAP %d %s %d|%d|%d\n", s, map:quarters_at(pos):str(), bbt.bars, bbt.beats, bbt.ticks))
  for _, l in ipairs(lanes) do
    says:write(string.format("AUT %s\t%d\t%.17g\n", l[1], s, l[2]:eval(pos)))
  end
end
says:close()

print("DONE")
close_session()
