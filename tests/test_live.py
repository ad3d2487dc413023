"""`par track` on live footage, against real servers on 127.0.0.1: an RTSP camera (GStreamer's gst-rtsp-server,
Debian's packages, `make stream-servers`) and an HTTP MPEG-TS stream (FFmpeg's muxer through PyAV), each serving the
synthetic scene at its own rate; a webhook receiver. `par` runs as a real process: what matters is what a reader sees
in OUT while it runs, signals and a server that goes away."""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ForkedPar, one_error_line, run_par

SERVERS = Path(__file__).parent / "servers"
DEBIAN_PYTHON = os.environ.get("PAR_STREAM_PYTHON", "/usr/bin/python3")  # python3-gi: GStreamer's RTSP server
SECRET = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A stream server process that prints `ready` once it listens."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc = self.start()

    def start(self) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
        return proc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def rtsp_server(video: Path, user: str | None = None, once: bool = False) -> tuple[Server, str]:
    """An RTSP camera serving `video` (with a login when `user`; switched off after one session when `once`)."""
    if subprocess.run([DEBIAN_PYTHON, str(SERVERS / "rtsp_server.py"), "--check"], capture_output=True).returncode:
        pytest.fail(f"GStreamer's RTSP server is not reachable through {DEBIAN_PYTHON}: `make stream-servers`")
    port = free_port()
    extra = (["--user", user, "--password", SECRET] if user else []) + (["--once"] if once else [])
    return Server([DEBIAN_PYTHON, str(SERVERS / "rtsp_server.py"), str(video), str(port), *extra]), \
        f"rtsp://{user + ':' + SECRET + '@' if user else ''}127.0.0.1:{port}/live"


def http_server(video: Path, start_frame: int = 0, port: int | None = None, audio_only: bool = False
                ) -> tuple[Server, str]:
    """Serves the video from `start_frame` (or only silence) to one client, then exits."""
    port = port or free_port()
    return Server([sys.executable, str(SERVERS / "http_ts_server.py"), str(video), str(port), "--start-frame",
                   str(start_frame), "--once", *(["--audio-only"] if audio_only else [])]), \
        f"http://127.0.0.1:{port}/live.ts"


class Webhook:
    """A local HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start_par(*args) -> ForkedPar:
    """`par` as a process of its own, as a user starts it from a shell (Ctrl-C raises KeyboardInterrupt)."""
    return ForkedPar(list(args))


def finish(proc: ForkedPar, timeout: float = 120) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def records(out: Path) -> list[dict]:
    """Every whole line of a live folder's tracks.jsonl (a reader may catch the last one while it is written, as
    `par search` may: read_live_records leaves it out too)."""
    path = out / "tracks.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("\n")]


def everything_in(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_kept_crops_stay_bounded_and_span_the_track():
    from par_pipeline.data.sampling import sample_frames
    from par_pipeline.footage.tracking import KeptCrops

    keep = KeptCrops(8)
    for frame in range(1000):
        keep.add(frame, lambda frame=frame: f"crop {frame}")
        assert len(keep.frames) <= 8
    gaps = {b - a for a, b in zip(keep.frames, keep.frames[1:])}
    assert keep.frames[0] == 0 and len(gaps) == 1 and 1000 - keep.frames[-1] <= next(iter(gaps))  # even, spanning
    frames, crops = keep.chosen(3, list(range(1000)))
    assert frames[0] == 0 and frames[-1] == 999 and crops == [f"crop {f}" for f in frames]  # the track's ends
    assert abs(frames[1] - 500) <= next(iter(gaps)) // 2  # the nearest kept to the file's choice
    # a track no longer than the kept crops: exactly the frames par track on the recorded file uses
    short = KeptCrops(16)
    track = [3, 4, 5, 7, 8, 9, 10, 12, 13, 15, 16]
    for f in track:
        short.add(f, lambda f=f: f)
    assert short.chosen(6, track)[0] == [track[k] for k in sample_frames(len(track), 6, None)]


# --- the scenes played in real time, side by side --------------------------------------------------------------
# Each waits on a stream's clock, not on the CPU: played at once (a thread each, `par` a process of its own in each),
# they take as long as the longest, not as long as all of them. Each test asserts on its own scenario's result; a
# failure inside a scenario is raised in its test.

def play_camera_and_file(scene: Path, run_path: Path, base: Path) -> dict:
    """An RTSP camera with a login, followed with alert rules and a webhook, beside the same footage played live
    from the file as two cameras at once; `par search` asked while the camera still plays."""
    server, url = rtsp_server(scene / "video.mp4", user="ann")
    hook = Webhook()
    cam = base / "cam"

    def with_backpack() -> set[int]:
        return {r["id"] for r in records(cam) if r["description"]["backpack"] == "yes"}
    try:
        streamed = start_par("track", url, "--checkpoint", run_path, "--out", cam, "--alert", "backpack",
                             "--alert", "top color = black, bottom length short", "--alert-webhook", hook.url,
                             "--reconnect", 0)
        from_file = start_par("track", f"door={scene / 'video.mp4'}", f"hall={scene / 'video.mp4'}", "--live",
                              "--checkpoint", run_path, "--out", base / "file")
        seen_while_playing = 0
        while streamed.poll() is None and not seen_while_playing:
            seen_while_playing = len(records(cam))
            time.sleep(0.05)
        before = with_backpack()
        search, _ = finish(start_par("search", cam, "backpack", "--json"))
        after, still_playing = with_backpack(), streamed.poll() is None
        out, err = finish(streamed)
        finish(from_file)
    finally:
        server.kill()
    return {"url": url, "cam": cam, "file": base / "file", "seen_while_playing": seen_while_playing,
            "before": before, "found_live": {r["track"] for r in json.loads(search)["results"]}, "after": after,
            "still_playing": still_playing, "out": out, "err": err, "hook": hook.received}


def play_reconnect(scene: Path, run_path: Path, base: Path) -> Path:
    """The HTTP stream's server killed mid-stream, back a moment later with the scene going on."""
    server, url = http_server(scene / "video.mp4")
    port = int(url.split(":")[2].split("/")[0])
    proc = start_par("track", url, "--checkpoint", run_path, "--out", base / "cam", "--reconnect", 4,
                     "--lost-frames", 10)  # attempts 0.5, 1.5, 3.5 and 7.5 s after the drop
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (base / "cam").exists():  # made once the stream answered
            time.sleep(0.05)
        time.sleep(3)
        server.kill()
        time.sleep(0.5)
        server, _ = http_server(scene / "video.mp4", start_frame=50, port=port)  # back within a few seconds
        finish(proc)
    finally:
        server.kill()
    return base / "cam"


def play_signals(scene: Path, run_path: Path, base: Path) -> dict:
    """Two live runs with people in view, one stopped by SIGINT (Ctrl-C), one by SIGTERM, once each has written a
    provisional record: per signal its folder, exit code and stderr."""
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = base / sig.name
        runs[sig] = (out, start_par("track", scene / "video.mp4", "--live", "--checkpoint", run_path, "--out", out,
                                    "--update-every", 0.5, "--lost-frames", 200,  # nobody closes before the signal
                                    "--alert", "backpack", "--alert", "backpack = no", "--early-alerts"))
    for sig, (out, proc) in runs.items():
        deadline = time.time() + 60
        while time.time() < deadline and not any(r["provisional"] for r in records(out)):
            time.sleep(0.05)
        os.kill(proc.pid, sig)
    ended = {}
    for sig, (out, proc) in runs.items():
        _, err = proc.communicate(timeout=120)
        ended[sig] = (out, proc.returncode, err)
    return ended


def play_growing_file(scene: Path, run_path: Path, base: Path) -> tuple[Path, int | None]:
    """`--live` on an MPEG-TS recording under way (written at the scene's own rate: its 8 s are shorter than the
    camera scenario beside it, and at twice the rate a loaded machine dropped frames): the folder, and the
    recorder's exit code when par had ended."""
    recording = base / "recording.ts"
    recorder = subprocess.Popen([sys.executable, str(SERVERS / "recorder.py"), str(scene / "video.mp4"),
                                 str(recording)])
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (recording.exists() and recording.stat().st_size):
            time.sleep(0.02)
        finish(start_par("track", recording, "--live", "--checkpoint", run_path, "--out", base / "o"))
        return base / "o", recorder.poll()
    finally:
        recorder.kill()
        recorder.wait()


def play_udp(scene: Path, run_path: Path, base: Path) -> Path:
    """An encoder pushing the scene once as MPEG-TS over UDP (at twice its rate) to a listening par."""
    port = free_port()
    proc = start_par("track", f"udp://127.0.0.1:{port}", "--checkpoint", run_path, "--out", base / "o",
                     "--reconnect", 0, "--stream-timeout", 3)
    listening = f":{port:04X} "
    deadline = time.time() + 60
    while time.time() < deadline and listening not in Path("/proc/net/udp").read_text():
        time.sleep(0.05)
    subprocess.run([sys.executable, str(SERVERS / "recorder.py"), str(scene / "video.mp4"),
                    f"udp://127.0.0.1:{port}?pkt_size=1316", "--speed", "2"], check=True, timeout=60)
    finish(proc)
    return base / "o"


def play_site(scene: Path, run_path: Path, base: Path) -> dict:
    """Two cameras of a synthetic site (par synth --cameras) played live at once, linked as records arrive."""
    site = base / "site"
    finish(start_par("synth", site, "--video", "--cameras", 2, "--people", 5, "--seconds", 14, "--width", 320,
                     "--height", 180, "--seed", 1))
    said, _ = finish(start_par("track", f"cam1={site / 'cam1' / 'video.mp4'}", f"cam2={site / 'cam2' / 'video.mp4'}",
                               "--live", "--link", "--alert-route", "cam1 > cam2, cam2 > cam1", "--checkpoint",
                               run_path, "--out", base / "o"))
    return {"out": base / "o", "said": said}


@pytest.fixture(scope="module")
def played(scene, run_path, tmp_path_factory) -> Iterator[dict[str, Future]]:
    scenarios = {"camera": play_camera_and_file, "reconnect": play_reconnect, "signals": play_signals,
                 "growing": play_growing_file, "udp": play_udp, "site": play_site}
    with ThreadPoolExecutor(len(scenarios)) as pool:
        yield {name: pool.submit(play, scene, run_path, tmp_path_factory.mktemp(name))
               for name, play in scenarios.items()}


def test_a_camera_stream_gives_the_tracks_of_the_file_played_live(played, open_page):
    """Records appear while the stream plays, the tracks and attributes agree with the file played live, the
    alerts are the people `par search` finds, the webhook hears each alert once, no credential anywhere."""
    from test_track import mot_scores

    r = played["camera"].result()
    cam, file = r["cam"], r["file"] / "door"
    assert r["seen_while_playing"], "no record appeared while the stream was playing"
    # par search answered from what the running camera had written so far
    assert r["before"] <= r["found_live"] <= r["after"] and r["still_playing"]
    doc = json.loads((cam / "tracks.json").read_text())
    live = doc["live"]
    assert live["frames_read"] == 80 and live["dropped"] == 0 and live["ended"]
    assert doc["source"] == r["url"].replace(f"ann:{SECRET}@", "***@")
    # the stream carries the file's own packets: the same tracks, identity agreement of the two >= 0.95
    reference = cam.parent / "reference-gt.txt"  # the file's tracks as ground truth (consider = 1, pedestrian, visible)
    reference.write_text("".join(",".join(line.split(",")[:6] + ["1", "1", "1"]) + "\n"
                                 for line in (file / "tracks.txt").read_text().splitlines()))
    _, idf1, _ = mot_scores(reference, cam / "tracks.txt")
    assert idf1 >= 0.95, idf1
    by_id = {t["id"]: t for t in json.loads((file / "tracks.json").read_text())["tracks"]}
    for t in doc["tracks"]:
        twin = by_id[t["id"]]
        assert t["frames_used"] == twin["frames_used"] and t["description"] == twin["description"]
        assert all(abs(p - twin["probabilities"][a]) < 1e-4 for a, p in t["probabilities"].items())
    assert (r["file"] / "hall" / "tracks.txt").read_text() == (file / "tracks.txt").read_text()
    # each record was written once, whole, a lost_frames wait after the person's last frame
    lines = records(cam)
    assert sorted(x["id"] for x in lines) == sorted(t["id"] for t in doc["tracks"])
    # a person who left while the stream played: lost_frames (30) frames at 10 fps = 3 s, then the model; who was
    # still in view when the stream ended is written at once
    left = [x for x in lines if x["last_frame"] + 31 <= 80]
    assert left and all(3.0 <= x["delay_s"] < 20 for x in left) and all(x["delay_s"] < 20 for x in lines), [
        (x["id"], x["last_frame"], x["delay_s"]) for x in lines]  # which bound a loaded machine crossed
    # alerts: exactly the people par search finds on the final output, each POSTed once
    alerts = [json.loads(line) for line in (cam / "alerts.jsonl").read_text().splitlines()]
    for rule, conditions in (("backpack", ["backpack"]),
                             ("top color = black, bottom length short", ["top color = black", "bottom length short"])):
        found = json.loads(run_par("search", cam, *conditions, "--json").stdout)["results"]
        assert sorted(a["track"] for a in alerts if a["rule"] == rule) == sorted(x["track"] for x in found), rule
    assert alerts and sorted((a["rule"], a["track"]) for a in r["hook"]) == \
        sorted((a["rule"], a["track"]) for a in alerts)
    assert live["webhook"]["sent"] == len(alerts) and live["webhook"]["failed"] == 0
    assert "alert" in r["out"] and live["alerts"] == len(alerts)
    # the page: a row per person with the crops their attributes came from, loaded clean from disk
    opened = open_page(cam / "tracks.html")
    opened.check_clean(cam / "tracks.html")
    assert opened.page.eval_on_selector_all("#people tbody tr", "rs => rs.map(r => Number(r.dataset.id))") == \
        [t["id"] for t in doc["tracks"]]
    assert opened.page.locator("#people img").count() == sum(len(t["frames_used"]) for t in doc["tracks"])
    assert "***@127.0.0.1" in opened.page.locator("h1").text_content()
    # no credential in any output, on the screen, or in what the webhook got
    for text in (everything_in(cam), r["out"], r["err"], json.dumps(r["hook"])):
        assert SECRET not in text


def test_live_link_gives_each_record_its_person_as_par_link_would(played, tmp_path):
    """--link: each record carries its person when written, links.jsonl every change, and the run's last link of
    each record is `par link`'s on the finished folders (the same people; the live run numbers them as they
    arrive)."""
    r = played["site"].result()
    out = r["out"]
    changes = [json.loads(line) for line in (out / "links.jsonl").read_text().splitlines()]
    assert changes and all(c["format"] == "par-link" and c["version"] == 1 for c in changes)
    last = {}
    for c in changes:
        last[(c["camera"], c["track"])] = c
    assert all(c["settled"] for c in last.values())
    online = {key: c["person"] for key, c in last.items()}
    for camera in ("cam1", "cam2"):
        for record in records(out / camera):  # its person when written: the one its last change then said
            said = [c["person"] for c in changes if (c["camera"], c["track"]) == (camera, record["id"])]
            assert record["person"] in said
        for t in json.loads((out / camera / "tracks.json").read_text())["tracks"]:
            assert t["person"] == online[(camera, t["id"])]
    run_par("link", out, "--out", tmp_path / "people")
    doc = json.loads((tmp_path / "people" / "people.json").read_text())
    offline = {(x["camera"], x["track"]): p["person"] for p in doc["people"] for x in p["sightings"]}
    assert offline.keys() == online.keys()
    assert len({(offline[k], online[k]) for k in offline}) == len(set(offline.values())) == len(set(online.values()))
    assert f"{len(online)} records of 2 cameras are {len(doc['people'])} people" in " ".join(r["said"].split())
    # route alerts: what stands (alerted, not retracted) is every route the settled people make, where it ends
    from par_pipeline.footage.live_link import route_end

    events = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    standing = {(a["rule"], a["camera"], a["track"]) for a in events if a["event"] == "alert"} - {
        (a["rule"], a["camera"], a["track"]) for a in events if a["event"] == "retracted"}
    made = set()
    for p in doc["people"]:
        rows = [(x["first_time"], x["camera"], (x["camera"], x["track"])) for x in p["sightings"]]
        for route in (("cam1", "cam2"), ("cam2", "cam1")):
            end = route_end(route, rows)
            if end is not None:
                made.add((" > ".join(route), *end))
    assert standing == made


def test_a_camera_that_drops_is_reconnected(played):
    """par reconnects, says how long it was away, closes the tracks before the gap, and goes on writing records
    after it."""
    doc = json.loads((played["reconnect"].result() / "tracks.json").read_text())
    live = doc["live"]
    assert live["reconnects"] == 1 and len(live["gaps"]) == 1, live
    gap = live["gaps"][0]
    assert gap["frames"] >= 10 and ("dropped" in gap["reason"] or "ended" in gap["reason"]), gap
    after = gap["after_frame"] + gap["frames"]
    assert any(t["first_frame"] > after for t in doc["tracks"]), "no record from after the reconnect"
    assert all(t["last_frame"] <= gap["after_frame"] or t["first_frame"] > after for t in doc["tracks"])  # closed


def test_ctrl_c_and_sigterm_write_the_open_tracks(played):
    """Stopped while people are in view: their tracks are closed and written, then every output, and the exit code
    says the run was stopped (130, 143); provisional records of long tracks came first (--update-every), and with
    --early-alerts each early alert is confirmed or retracted by the person's final record."""
    ended = played["signals"].result()
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        out, returncode, err = ended[sig]
        assert returncode == code, err[-3000:]
        assert "interrupted" in err if sig == signal.SIGINT else True
        doc = json.loads((out / "tracks.json").read_text())
        assert doc["live"]["ended"] == f"stopped by {sig.name}" and doc["tracks"], doc["live"]
        assert all(not t["provisional"] for t in doc["tracks"])
        final = [r for r in records(out) if not r["provisional"]]
        assert sorted(r["id"] for r in final) == [t["id"] for t in doc["tracks"]]
        assert (out / "tracks.html").is_file() and (out / "tracks.csv").is_file()
        events = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
        early = [(e["track"], e["rule"]) for e in events if e["event"] == "early"]
        settled = [(e["track"], e["rule"]) for e in events if e["event"] in ("confirmed", "retracted")]
        assert early and sorted(early) == sorted(settled)  # each early alert settled once
        by_id = {t["id"]: t for t in doc["tracks"]}
        for e in events:
            if e["event"] in ("confirmed", "retracted"):  # as the final record says
                said = by_id[e["track"]]["description"]["backpack"] == ("yes" if e["rule"] == "backpack" else "no")
                assert said == (e["event"] == "confirmed"), e


def test_a_file_still_being_written_is_followed_as_it_grows(played):
    """Every frame is read, as it arrives, and the run ends once the recorder has stopped writing."""
    out, recorder_code = played["growing"].result()
    assert recorder_code == 0  # it had finished when par did
    doc = json.loads((out / "tracks.json").read_text())
    assert doc["live"]["frames_read"] == 80 and doc["live"]["dropped"] == 0 and doc["tracks"]


def test_an_encoder_pushing_udp_mpeg_ts(played):
    """`udp://` as an encoder pushes it: par listens, the encoder sends the scene once; when it stops sending, the
    read times out and the run ends with what it saw."""
    doc = json.loads((played["udp"].result() / "tracks.json").read_text())
    assert doc["live"]["frames_read"] >= 70 and doc["tracks"] and "nothing received for 3 s" in doc["live"]["ended"], \
        doc["live"]


def test_a_webhook_that_fails_never_stops_the_run_and_a_rerun_continues_the_folder(scene, run_path, tmp_path,
                                                                                    open_page):
    """Alerts to a webhook nobody answers: every record and alert is still written, the failures are counted in
    tracks.json and said once at the end, and the run ends normally. The same command again continues the folder:
    nothing of the first run is removed or rewritten, ids go on, every run is searched and shown; a single camera
    into a multi-camera folder is told what that folder is."""
    out = tmp_path / "o"
    dead = f"http://u:{SECRET}@127.0.0.1:{free_port()}/hooks/{SECRET}"
    first = run_par("track", scene / "video.mp4", "--live", "--speed", 4, "--checkpoint", run_path, "--out", out,
                    "--alert", "backpack = no", "--alert", "backpack", "--alert-webhook", dead, "--webhook-retries", 1)
    doc = json.loads((out / "tracks.json").read_text())
    alerts = (out / "alerts.jsonl").read_text().splitlines()
    hook = doc["live"]["webhook"]
    assert len(alerts) == len(doc["tracks"]) > 0  # each person is either with a backpack or without
    assert hook["sent"] == 0 and hook["failed"] == len(alerts) and hook["retries"] == len(alerts)
    said = " ".join(first.stderr.split())
    assert f"{len(alerts)} of {len(alerts)} alert event(s) not delivered" in said and hook["undelivered"] == 0
    assert hook["url"] == f"http://127.0.0.1:{dead.split(':')[3].split('/')[0]}"
    assert SECRET not in first.stdout + first.stderr + everything_in(out)

    before = {name: (out / name).read_bytes() for name in ("tracks.jsonl", "alerts.jsonl", "tracks.txt")}
    fresh = tmp_path / "just-recorded.mp4"  # an MP4 written a moment ago is read whole (not followed as it grows)
    shutil.copyfile(scene / "video.mp4", fresh)
    again = run_par("track", fresh, "--live", "--speed", 4, "--checkpoint", run_path, "--out", out,
                    "--alert", "backpack = no", "--alert", "backpack")
    for name, data in before.items():  # appended to, never rewritten
        assert (out / name).read_bytes()[:len(data)] == data, name
    both = json.loads((out / "tracks.json").read_text())
    assert both["live"]["frames_read"] == 80 and both["source"] == str(fresh)
    runs = [t["run"] for t in both["tracks"]]
    ids = [t["id"] for t in both["tracks"]]
    assert both["run"] == 2 and sorted(set(runs)) == [1, 2] and len(set(ids)) == len(ids)
    assert min(t["id"] for t in both["tracks"] if t["run"] == 2) > max(t["id"] for t in doc["tracks"])
    assert [(r["run"], bool(r["ended_at"])) for r in both["runs"]] == [(1, True), (2, True)]
    later = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()[len(alerts):]]
    assert len(later) == sum(1 for t in both["tracks"] if t["run"] == 2) > 0
    assert all(a["run"] == 2 and a["event"] == "alert" for a in later)
    found = json.loads(run_par("search", out, "backpack = no, not hat = yes or backpack", "--json",
                               check=False).stdout or "{}")
    assert found == {}  # 'or' is not in the grammar: one line, nothing printed
    found = json.loads(run_par("search", out, "backpack >= 0", "--json").stdout)["results"]  # everyone
    assert {r["run"] for r in found} == {1, 2} and sorted(r["track"] for r in found) == sorted(ids)
    assert "wrote" in again.stdout and "alerts.jsonl" in again.stdout and "(every run of this folder" in again.stdout
    opened = open_page(out / "tracks.html")  # the page shows every run, each person tagged with theirs
    opened.check_clean(out / "tracks.html")
    assert "2 runs of this live folder" in opened.page.locator("p.note").first.text_content()
    assert opened.page.locator("#people tbody tr").count() == len(ids)
    assert opened.page.locator("#people tbody tr", has_text="(run 2)").count() == runs.count(2)
    csv_rows = (out / "tracks.csv").read_text().splitlines()
    assert csv_rows[0].startswith("run,track,") and len(csv_rows) == len(both["tracks"]) + 1

    multi = tmp_path / "cams"
    run_par("track", f"door={scene / 'video.mp4'}", f"hall={scene / 'video.mp4'}", "--live", "--speed", 8,
            "--checkpoint", run_path, "--out", multi)
    result = run_par("track", scene / "video.mp4", "--live", "--checkpoint", run_path, "--out", multi, check=False)
    assert result.returncode == 2 and "holds a multi-camera live run (cameras: door, hall)" in \
        one_error_line(result)
    assert json.loads((multi / "door" / "tracks.json").read_text())["run"] == 1


def test_falling_behind_drops_frames_and_counts_them(scene, run_path, tmp_path):
    """A file played at 20x its rate (200 frames/s) to a detector that manages a few dozen (torchvision's SSDlite on
    a CPU): frames are dropped and counted per minute, not queued, and the tracker is told the time that passed."""
    run_par("track", scene / "video.mp4", "--live", "--speed", 20, "--checkpoint", run_path, "--out", tmp_path / "o",
            "--detector", "torchvision:ssdlite320_mobilenet_v3_large", "--allow-random-detector")
    live = json.loads((tmp_path / "o" / "tracks.json").read_text())["live"]
    assert live["dropped"] > 0 and sum(live["dropped_per_minute"]) == live["dropped"]
    assert live["frames_read"] == 80


def test_bad_live_sources_are_one_line_each_and_write_nothing(scene, run_path, tmp_path):
    server, url = rtsp_server(scene / "video.mp4", user="ann")
    try:
        wrong = url.replace(SECRET, "not-the-" + SECRET)
        cases = [(wrong, "refused the login"),
                 (f"rtsp://127.0.0.1:{free_port()}/live", "could not connect"),
                 ("ftp://127.0.0.1/x", "ftp:// is not a stream par reads"),
                 ("/dev/video99", "no such capture device")]
        for source, says in cases:
            result = run_par("track", source, "--checkpoint", run_path, "--out", tmp_path / "o", "--reconnect", 0,
                             check=False)
            line = one_error_line(result)
            assert result.returncode == 2 and says in line and SECRET not in result.stderr, line
            assert not (tmp_path / "o").exists()
    finally:
        server.kill()
    server, url = http_server(scene / "video.mp4", audio_only=True)
    try:
        result = run_par("track", url, "--checkpoint", run_path, "--out", tmp_path / "o", "--reconnect", 0,
                         check=False)
        assert "the stream has no video (only audio)" in one_error_line(result) and not (tmp_path / "o").exists()
    finally:
        server.kill()
    result = run_par("track", scene / "video.mp4", "--live", "--checkpoint", run_path, "--out", tmp_path / "o",
                     "--alert", "colour of the hat", check=False)
    assert result.returncode == 2 and "no attribute group 'colour of the hat'" in one_error_line(result)
    result = run_par("track", scene / "video.mp4", "--live", "--link", "--checkpoint", run_path, "--out",
                     tmp_path / "o", check=False)
    assert result.returncode == 2 and "--link links the records of several cameras" in one_error_line(result)
    result = run_par("track", f"a={scene / 'video.mp4'}", f"b={scene / 'video.mp4'}", "--live", "--link",
                     "--alert-route", "a > c", "--checkpoint", run_path, "--out", tmp_path / "o", check=False)
    assert result.returncode == 2 and "--alert-route 'a > c': two or more of the cameras a, b" in \
        one_error_line(result)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    result = run_par("track", scene / "video.mp4", "--live", "--checkpoint", run_path, "--out", tmp_path / "theirs",
                     check=False)
    assert result.returncode == 2 and "was not written by par" in one_error_line(result)


def test_torchrun_ranks_split_the_cameras(monkeypatch):
    from par_pipeline.footage.cameras import for_this_rank, source_names

    named = source_names(["rtsp://u:p@10.0.0.1/door", "rtsp://10.0.0.2/stream1", "yard=udp://239.0.0.1:5000"])
    assert [n for n, _ in named] == ["door", "stream1", "yard"]
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen += [n for n, _ in for_this_rank(named)]
    assert sorted(seen) == ["door", "stream1", "yard"]
