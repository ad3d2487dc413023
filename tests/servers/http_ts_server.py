"""An HTTP MPEG-TS stream for the live tests, as `ffmpeg -re -i VIDEO -c:v mpeg4 -f mpegts -listen 1 URL` serves one:
each client that GETs /live.ts receives the video as MPEG-TS (MPEG-4 video with its headers in the stream, as an encoder
sends it; PyAV's FFmpeg, no ffmpeg binary) at the video's own rate, from its start (or from --start-frame).

    python http_ts_server.py VIDEO.mp4 PORT [--start-frame N] [--once] [--audio-only]

Prints `ready` once listening; serves until killed (--once: exits after its first client, as a camera that is
switched off at the end of the scene). --audio-only sends a few seconds of silence and no video, as a
misconfigured encoder would."""
import argparse
import http.server

import av
from recorder import send_mpeg_ts  # this folder: the script's own

args = argparse.ArgumentParser()
args.add_argument("video")
args.add_argument("port", type=int)
args.add_argument("--start-frame", type=int, default=0)
args.add_argument("--once", action="store_true")
args.add_argument("--audio-only", action="store_true")
a = args.parse_args()


class Stream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/live.ts":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        try:
            if a.audio_only:
                self.silence()
                return
            with av.open(self.wfile, "w", format="mpegts", options={"flush_packets": "1"}) as out:
                send_mpeg_ts(a.video, out, a.start_frame)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away

    def silence(self) -> None:
        import numpy as np

        with av.open(self.wfile, "w", format="mpegts") as out:
            stream = out.add_stream("mp2", rate=48000, layout="mono")
            for k in range(100):  # 100 x 1152 samples: 2.4 s
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
                frame.sample_rate, frame.pts = 48000, k * 1152
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)

    def log_message(self, *args) -> None:
        pass


server = (http.server.HTTPServer if a.once else http.server.ThreadingHTTPServer)(("127.0.0.1", a.port), Stream)
print("ready", flush=True)
if a.once:
    server.handle_request()  # in this thread: the process ends when the client has the whole video
else:
    server.serve_forever()
