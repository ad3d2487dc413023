"""A recorder / encoder for the live tests: sends a video as MPEG-TS at the video's own rate, flushing each packet, to
a file (as a camera's recorder writes the file `par track --live` follows while it grows) or to a URL (as an encoder
pushes `udp://HOST:PORT` to whoever listens there).

    python recorder.py VIDEO.mp4 FILE.ts | udp://127.0.0.1:PORT?pkt_size=1316"""
import sys
import time

import av

video_path, out_path = sys.argv[1], sys.argv[2]
with av.open(video_path) as source, av.open(out_path, "w", format="mpegts", options={"flush_packets": "1"}) as out:
    video = source.streams.video[0]
    rate = video.average_rate
    stream = out.add_stream("mpeg4", rate=rate)
    stream.width, stream.height = video.codec_context.width, video.codec_context.height
    stream.pix_fmt, stream.bit_rate, stream.gop_size = "yuv420p", 2_000_000, int(rate)
    start = time.monotonic()
    for n, frame in enumerate(source.decode(video)):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
        frame.pts, frame.time_base = n, 1 / rate
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
