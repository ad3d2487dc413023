"""An RTSP camera for the live tests: GStreamer's gst-rtsp-server (Debian's gir1.2-gst-rtsp-server-1.0, run by
Debian's own python3, which has python3-gi) serving one video file at its own rate, as a camera would.

    /usr/bin/python3 rtsp_server.py VIDEO.mp4 PORT [--user USER --password PASSWORD] [--once]
    /usr/bin/python3 rtsp_server.py --check     (exit 0 when everything it needs is installed: `make stream-servers`)

Serves rtsp://127.0.0.1:PORT/live (the mp4's MPEG-4 video, no re-encoding), prints `ready` once listening. Each
client gets the video from its start. With --user, a client must log in (HTTP basic). With --once the server exits
when its first client's session ends (a camera switched off after the scene: a client's reconnects are refused)."""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

args = argparse.ArgumentParser()
args.add_argument("video", nargs="?")
args.add_argument("port", nargs="?")
args.add_argument("--check", action="store_true")
args.add_argument("--once", action="store_true")
args.add_argument("--user")
args.add_argument("--password")
a = args.parse_args()

Gst.init(None)
if a.check:
    sys.exit(0 if all(Gst.ElementFactory.find(e) for e in ("filesrc", "qtdemux", "rtpmp4vpay")) else 1)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(a.port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f'( filesrc location="{a.video}" ! qtdemux ! rtpmp4vpay name=pay0 pt=96 config-interval=1 )')
factory.set_shared(False)
if a.user:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("user", "media.factory.access", True)
    permissions.add_permission_for_role("user", "media.factory.construct", True)
    factory.set_permissions(permissions)
server.get_mount_points().add_factory("/live", factory)
loop = GLib.MainLoop()
if a.once:
    factory.connect("media-constructed", lambda _, media: media.connect("unprepared", lambda _m: loop.quit()))
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{a.port}")
print("ready", flush=True)
loop.run()
