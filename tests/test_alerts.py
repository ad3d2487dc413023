"""Conditions, alert events, the webhook and the masking of secrets: in-process, against servers on 127.0.0.1."""
import http.server
import json
import shutil
import threading
import time

import pytest

from conftest import one_error_line, run_par

GROUPS = ["backpack", "hat", "gender female", "top color"]
ATTRIBUTES = ["backpack", "hat", "gender female", "top color black", "top color red", "top color blue"]


def person(pid: int, backpack: float, hat: float, top: str, p_top: float) -> dict:
    probs = {"backpack": backpack, "hat": hat, "gender female": 0.3, "top color black": 0.1, "top color red": 0.1,
             "top color blue": 0.1}
    probs[f"top color {top}"] = p_top
    return {"id": pid, "line": f"#{pid}", "first_frame": 1, "last_frame": 9,
            "description": {"backpack": "yes" if backpack >= 0.5 else "no", "hat": "yes" if hat >= 0.5 else "no",
                            "gender female": "no", "top color": top},
            "probabilities": probs}


PEOPLE = [person(1, 0.9, 0.2, "red", 0.7), person(2, 0.1, 0.8, "black", 0.6), person(3, 0.3, 0.7, "red", 0.5)]


@pytest.mark.parametrize("query, ids", [
    ("backpack", [1]),
    ("backpack = no", [2, 3]),
    ("not backpack", [2, 3]),
    ("backpack = no, hat", [2, 3]),
    ("backpack = no and hat", [2, 3]),
    ("NOT Backpack AND top color = red", [3]),
    ("not top color = red", [2]),
    ("top color = red >= 0.6", [1]),
    ("not backpack >= 0.8", [2]),
    ("not hat = no", [2, 3]),
])
def test_one_grammar_for_search_alerts_and_the_page(query, ids):
    """Commas, `and`, `= no` and `not` read the same everywhere (the page's script: test_pages)."""
    from par_pipeline.footage.conditions import match, parse_query

    conditions = parse_query(query, GROUPS, ATTRIBUTES)
    assert [p["id"] for p in PEOPLE if match(conditions, p) is not None] == ids
    score, scores = match(conditions, PEOPLE[ids[0] - 1])
    assert set(scores) == {c.text for c in conditions} and 0 < score <= 1


@pytest.mark.parametrize("query, says", [
    ("backpack = maybe", "'backpack' is yes or no; write 'backpack', 'backpack = no' or 'not backpack'"),
    ("top colour = red", "did you mean 'top color = red'?"),
    ("red top", "did you mean 'top color = red'?"),
    ("female", "did you mean 'gender female'?"),
    ("top color = rde", "did you mean 'top color = red'?"),
    ("top color", "write e.g. 'top color = black'"),
    ("hat >= 2", "a probability is between 0 and 1"),
    ("hat == yes", "write GROUP, GROUP = VALUE, not GROUP"),
])
def test_a_wrong_condition_names_the_nearest_valid_form(query, says):
    from par_pipeline.errors import ParError
    from par_pipeline.footage.conditions import parse_query

    with pytest.raises(ParError) as err:
        parse_query(query, GROUPS, ATTRIBUTES)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_alerts_fire_on_final_records_and_early_ones_are_confirmed_or_retracted():
    from par_pipeline.footage.alerts import AlertBook, AlertRule
    from par_pipeline.footage.conditions import parse_query

    rules = [AlertRule("backpack", parse_query("backpack", GROUPS, ATTRIBUTES))]
    wrong_at_first, right_at_first = person(1, 0.9, 0.2, "red", 0.7), person(2, 0.9, 0.2, "red", 0.7)
    final_1, final_2 = person(1, 0.2, 0.2, "red", 0.7), person(2, 0.8, 0.2, "red", 0.7)
    book = AlertBook(rules)  # the default: provisional records raise nothing
    assert book.events(wrong_at_first, provisional=True) == [] and book.events(final_1, provisional=False) == []
    assert [e["event"] for e in book.events(final_2, provisional=False)] == ["alert"]
    early = AlertBook(rules, early=True, context={"camera": "door", "run": 2})
    events = [e for r, prov in ((wrong_at_first, True), (right_at_first, True), (wrong_at_first, True),
                                (final_1, False), (final_2, False), (final_2, False)) for e in early.events(r, prov)]
    assert [(e["event"], e["track"]) for e in events] == [("early", 1), ("early", 2), ("retracted", 1),
                                                          ("confirmed", 2)]
    assert all(e["camera"] == "door" and e["run"] == 2 and e["version"] == 2 for e in events)
    assert events[2]["score"] is None and events[3]["provisional"] is False and events[0]["provisional"] is True


LEAKS = [
    ("rtsp://admin:p@ss@cam/1", "p@ss", "rtsp://***@cam/1"),
    ("rtsp://admin:pa/ss@cam/1", "pa/ss", "rtsp://***@cam/1"),
    ("srt://h:9000?passphrase=topsecret&latency=200", "topsecret", "srt://h:9000?passphrase=***&latency=200"),
    ("http://cam/live.ts?password=hunter2", "hunter2", "http://cam/live.ts?password=***"),
    ("http://cam/live.ts?res=720&pwd=hunter3", "hunter3", "http://cam/live.ts?res=720&pwd=***"),
    ("rtmp://live.example/app/sk_live_abc123", "sk_live_abc123", "rtmp://live.example/app/***"),
    ("https://hooks.slack.com/services/T0/B0/XYZsecret42", "XYZsecret42",
     "https://hooks.slack.com/services/***/***/***"),
    ("https://discord.com/api/webhooks/123/tok3n", "tok3n", "https://discord.com/api/webhooks/***/***"),
]


@pytest.mark.parametrize("url, secret, shown", LEAKS)
def test_urls_are_masked_by_parsing(url, secret, shown):
    from par_pipeline.errors import masked, one_line

    assert masked(url) == shown
    assert secret not in masked(f"error: {url}: could not connect ({url}).")
    assert secret not in one_line(RuntimeError(f"opening '{url}' failed"))
    for kept in ("http://127.0.0.1:8000/live.ts", "rtsp://10.0.0.2/stream1", "udp://239.0.0.1:5000?pkt_size=1316"):
        assert masked(kept) == kept


class Hook:
    """A webhook server on 127.0.0.1 answering each POST with the next of `answers` (status, headers), then 204."""

    def __init__(self, answers=()):
        self.answers, self.bodies, self.times = list(answers), [], []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                hook.times.append(time.monotonic())
                status, headers = hook.answers.pop(0) if hook.answers else (204, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815 (a redirect followed as a GET would land here)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/s3cretT0ken"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_the_webhook_retries_what_may_pass_and_never_follows_a_redirect(caplog):
    from par_pipeline.footage.webhook import Webhook

    other = Hook()
    hooks = {"redirect": Hook([(302, {"Location": other.url})]),
             "busy": Hook([(429, {"Retry-After": "1"}), (503, {})]),
             "refused": Hook([(400, {})]),
             "fine": Hook()}
    try:
        results = {}
        for name, hook in hooks.items():
            w = Webhook(hook.url, backoff=0.01)
            w.post({"event": "alert", "n": 1})
            results[name] = w.close(wait_s=20)
    finally:
        for hook in (other, *hooks.values()):
            hook.close()
    assert results["redirect"]["failed"] == 1 and "redirects are not followed" in results["redirect"]["last_error"]
    assert other.bodies == [] and len(hooks["redirect"].bodies) == 1  # the body never went anywhere else
    assert results["busy"]["sent"] == 1 and results["busy"]["retries"] == 2 and len(hooks["busy"].bodies) == 3
    assert hooks["busy"].times[1] - hooks["busy"].times[0] >= 0.9  # Retry-After honoured over the backoff
    assert results["refused"] == {**results["refused"], "failed": 1, "retries": 0, "undelivered": 0}
    assert results["fine"]["sent"] == 1 and results["fine"]["undelivered"] == 0
    assert all(r["url"].count("/") == 2 and "s3cret" not in json.dumps(r) for r in results.values())
    assert "s3cret" not in caplog.text


def test_a_dead_webhook_counts_failures_not_its_stop_marker():
    import socket

    from par_pipeline.footage.webhook import Webhook

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = Webhook(f"http://u:pw@127.0.0.1:{port}/hook?token=abc", backoff=0.01)
    for k in range(3):
        w.post({"n": k})
    done = w.close(wait_s=20)
    assert done == {**done, "posted": 3, "sent": 0, "failed": 3, "retries": 9, "undelivered": 0}
    assert done["url"] == f"http://127.0.0.1:{port}" and "pw" not in done["last_error"]


def test_an_unknown_torchscript_archive_is_not_loaded(tmp_path, monkeypatch):
    """Loading TorchScript runs code from the file: only OpenAI's release or an archive the user lists is read."""
    from clip_weights import tiny_clip_files
    from par_pipeline.errors import ParError
    from par_pipeline.model.clip import load_clip

    files = tiny_clip_files(tmp_path / "w")
    load_clip("par-tiny-clip", str(files["torchscript"]), False, 0)  # listed by the suite, as a user lists theirs
    monkeypatch.setenv("PAR_TRUSTED_WEIGHTS", str(tmp_path / "nothing-trusted.json"))
    (tmp_path / "nothing-trusted.json").write_text('{"weights": {}}')
    with pytest.raises(ParError) as err:
        load_clip("par-tiny-clip", str(files["torchscript"]), False, 0)
    assert "runs its own code when loaded" in str(err.value) and "PAR_TRUSTED_WEIGHTS" in str(err.value)


def test_compilation_falls_back_only_when_compiling_fails():
    import torch

    from par_pipeline import compiling

    calls = {"n": 0}

    def fn(x):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x + 1

    class Compiled:  # torch.compile's stand-in: the wrapped function, run as compiled
        def __init__(self, f, **_):
            self.f = f

        def __call__(self, x):
            return self.f(x)

    warned = []
    original = torch.compile
    torch.compile = Compiled
    try:
        step = compiling.compiled_or_eager(fn, "compile", warned.append)
        step(torch.zeros(1))
        step(torch.zeros(1))
        with pytest.raises(torch.cuda.OutOfMemoryError):  # a failure of the run, not of compiling: raised
            step(torch.zeros(1))
        assert warned == []
        failing = compiling.compiled_or_eager(lambda x: x * 2, "compile", warned.append)
        torch.compile = lambda f, **_: (lambda x: (_ for _ in ()).throw(RuntimeError("no C++ compiler")))
        failing = compiling.compiled_or_eager(lambda x: x * 2, "compile", warned.append)
        assert failing(torch.ones(1)).item() == 2 and "running eager" in warned[0]  # the first call: eager for good
    finally:
        torch.compile = original


def test_par_bench_refuses_a_folder_it_did_not_make(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "store.zarr").mkdir()
    (data / "store.zarr" / "precious").write_text("the user's")
    result = run_par("bench", "--out", data, "--part", "extract", check=False)
    assert result.returncode == 2 and "was not written by par" in one_error_line(result)
    assert (data / "store.zarr" / "precious").read_text() == "the user's"


def test_messages_that_used_to_mislead(tracked, scene, store_path, tmp_path):
    """A URL missing its colon, a token store given as a checkpoint, defaults in --help, search's wording and its
    folder column: each says what it is; a command refused at once prints nothing but its error."""
    result = run_par("track", "rtsp//cam.example/live", "--checkpoint", tmp_path, "--out", tmp_path / "o",
                     check=False)
    assert "looks like a URL missing its colon; write rtsp://cam.example/live" in one_error_line(result)
    assert result.stdout.strip() == "" and not (tmp_path / "o").exists()
    tracked_out = tracked / "out"
    result = run_par("track", scene / "video.mp4", "--checkpoint", store_path, "--out", tmp_path / "o2", check=False)
    assert "is a token store (`par extract`), not a checkpoint" in one_error_line(result)
    assert "(default: 30)" in " ".join(run_par("track", "--help").stdout.split())
    two = tmp_path / "two"
    for name in ("a", "b"):
        shutil.copytree(tracked_out, two / name)
    shown = run_par("search", two, "backpack >= 0").stdout
    assert "folder" in shown and " a " in shown.replace("│", " ") and " b " in shown.replace("│", " ")
    assert "nobody matches hat >= 1.0" in " ".join(run_par("search", two, "hat >= 1.0").stdout.split())
    one = json.loads((tracked_out / "tracks.json").read_text())["tracks"][0]
    single = run_par("search", tracked_out, f"backpack >= 0, top color = {one['description']['top color']}",
                     "--json")
    if len(json.loads(single.stdout)["results"]) == 1:
        assert "1 person matches" in run_par("search", tracked_out, f"backpack >= 0, top color = "
                                                                    f"{one['description']['top color']}").stdout


def test_a_camera_url_s_secrets_reach_no_message_and_name_no_folder(run_path, tmp_path):
    """Every form of secret in a source URL (local addresses: nothing answers there): the one-line error holds none
    of them, nothing is written, and an RTMP stream key never names the camera's folder."""
    from par_pipeline.footage.cameras import source_names

    forms = {"rtsp://admin:p@ss@127.0.0.1:1/cam": "p@ss", "srt://127.0.0.1:1?passphrase=topsecret": "topsecret",
             "http://127.0.0.1:1/live.ts?res=720&password=hunter2": "hunter2",
             "rtmp://127.0.0.1:1/live/sk_live_abc123": "sk_live_abc123"}
    for url, secret in forms.items():
        result = run_par("track", url, "--checkpoint", run_path, "--out", tmp_path / "o", "--reconnect", 0,
                         check=False)
        assert result.returncode == 2 and secret not in result.stdout + result.stderr, result.stderr
        assert not (tmp_path / "o").exists()
    named = dict(source_names(["rtmp://127.0.0.1/live/sk_live_abc123", "https://u:pw@127.0.0.1/cams/door?token=x"]))
    assert set(named) == {"live", "door"}
