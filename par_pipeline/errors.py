"""The one exception type the CLI turns into a one-line error, and the rule that keeps credentials out of it."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit


class ParError(Exception):
    """A user-facing failure: the message names the file and the fix, on one line."""


def one_line(exc: BaseException) -> str:
    """The user's message of a ParError, also when a DataLoader worker raised it (torch re-raises it in the main
    process with the worker's traceback folded into the message; the message proper is its last line)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(f"{type(exc).__name__}: ", 1)[-1]
    return masked(" ".join(text.split()))


HIDDEN = "***"
# query keys whose values are secrets (compared lower-case, '-' as '_')
SECRET_KEYS = frozenset({"password", "passwd", "pwd", "pass", "passphrase", "secret", "client_secret", "token",
                         "access_token", "auth", "auth_token", "authorization", "key", "apikey", "api_key", "sig",
                         "signature", "streamkey", "stream_key", "streamid", "credentials", "x_amz_signature",
                         "x_amz_credential", "x_amz_security_token"})
# a path segment after which every segment is a secret (webhook tokens: /services/T0/B0/<token>, /webhooks/<id>/<t>)
SECRET_PATH_AFTER = frozenset({"services", "hooks", "webhooks", "webhook", "token", "tokens", "key", "keys", "secret",
                               "secrets"})
STREAM_KEY_SCHEMES = frozenset({"rtmp", "rtmps", "rtmpt", "rtmpe"})  # rtmp://host/app/<stream key>
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
_TRAILING = ".,;:)]}'\""
_TOKEN_LIKE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_-]{24,}$")  # a long key in any path


def masked(text: str) -> str:
    """Every URL in `text` without its secrets: user:password whole, secret query values, an RTMP stream key,
    webhook path tokens (`rtsp://***@cam/1`, `srt://h:9000?passphrase=***`, `rtmp://host/live/***`,
    `https://hooks.slack.com/services/***/***/***`). Errors, warnings, records and pages name servers and cameras,
    never credentials."""
    return _URL.sub(lambda m: _mask_url(m.group(0)), text)


def _mask_url(url: str) -> str:
    core = url.rstrip(_TRAILING)
    tail = url[len(core):]
    scheme, _, rest = core.partition("://")
    at = rest.split("?", 1)[0].rfind("@")  # userinfo ends at the last '@' before the query, whatever it holds
    if at >= 0:
        core = f"{scheme}://{HIDDEN}@{rest[at + 1:]}"
    try:
        parts = urlsplit(core)
    except ValueError:  # not parseable as a URL: hide everything after the scheme
        return core.split("://", 1)[0] + "://" + HIDDEN + tail
    netloc = parts.netloc
    path = _mask_path(parts.scheme.lower(), parts.path)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{quote(k, safe='')}={HIDDEN if _secret_key(k) else quote(v, safe='/:,')}"
                         for k, v in pairs) if pairs else query
    fragment = HIDDEN if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment)) + tail


def _secret_key(key: str) -> bool:
    return key.strip().lower().replace("-", "_") in SECRET_KEYS


def _mask_path(scheme: str, path: str) -> str:
    segments = path.split("/")
    hide = False
    for i, seg in enumerate(segments):
        if hide and seg:
            segments[i] = HIDDEN
        elif _TOKEN_LIKE.match(seg):
            segments[i] = HIDDEN
        hide = hide or seg.lower() in SECRET_PATH_AFTER
    named = [i for i, seg in enumerate(segments) if seg]
    if scheme in STREAM_KEY_SCHEMES and len(named) >= 2:
        segments[named[-1]] = HIDDEN
    return "/".join(segments)


def server_of(url: str) -> str:
    """A URL as scheme://host[:port] only: how a webhook is named in records, pages and messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://", 1)[0] + "://" + HIDDEN
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"
