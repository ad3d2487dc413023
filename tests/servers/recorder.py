"""A recorder / encoder for the live tests: sends a video as MPEG-TS at the video's own rate (times --speed), flushing
each packet, to a file (as a camera's recorder writes the file `par track --live` follows while it grows) or to a URL
(as an encoder pushes `udp://HOST:PORT` to whoever listens there). `send_mpeg_ts` is also what http_ts_server.py sends.

    python recorder.py VIDEO.mp4 FILE.ts | udp://127.0.0.1:PORT?pkt_size=1316 [--speed X]"""
import sys
import time

import av


def send_mpeg_ts(video_path: str, out: "av.container.OutputContainer", start_frame: int = 0, speed: float = 1.0
                 ) -> None:
    """The video from `start_frame` as MPEG-4 in MPEG-TS (its headers in the stream, as an encoder sends them) into
    `out`, one frame every 1/(rate x speed) seconds (the frames' timestamps stay the video's)."""
    with av.open(video_path) as source:
        video = source.streams.video[0]
        rate = video.average_rate
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = video.codec_context.width, video.codec_context.height
        stream.pix_fmt, stream.bit_rate, stream.gop_size = "yuv420p", 2_000_000, int(rate)
        start = time.monotonic()
        for n, frame in enumerate(source.decode(video)):
            if n < start_frame:
                continue
            time.sleep(max(0.0, start + (n - start_frame) / (rate * speed) - time.monotonic()))
            frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            frame.pts, frame.time_base = n - start_frame, 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


if __name__ == "__main__":
    speed = float(sys.argv[sys.argv.index("--speed") + 1]) if "--speed" in sys.argv else 1.0
    with av.open(sys.argv[2], "w", format="mpegts", options={"flush_packets": "1"}) as container:
        send_mpeg_ts(sys.argv[1], container, speed=speed)
