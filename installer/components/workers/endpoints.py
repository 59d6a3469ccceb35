"""The endpoints a worker serves, by group, as regular expressions on the request path: taken
from Synapse's workers documentation (docs/workers.md, "synapse.app.generic_worker" and
"synapse.app.media_repository"), written out here so that Caddy, the only way in, is the one
place that decides where each request goes.

Left to the main process on purpose: pagination (`/rooms/.../messages`: every request for a room
must reach the same process), single sign-on (one process). The admin API is not public at all (see MEDIA).
"""

from __future__ import annotations

from dataclasses import dataclass

SYNC = (
    r"^/_matrix/client/(r0|v3)/sync$",
    r"^/_matrix/client/(api/v1|r0|v3)/events$",
    r"^/_matrix/client/(api/v1|r0|v3)/initialSync$",
    r"^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
)

FEDERATION = (
    r"^/_matrix/federation/v1/version$",
    r"^/_matrix/federation/v1/event/",
    r"^/_matrix/federation/v1/state/",
    r"^/_matrix/federation/v1/state_ids/",
    r"^/_matrix/federation/v1/backfill/",
    r"^/_matrix/federation/v1/get_missing_events/",
    r"^/_matrix/federation/v1/publicRooms",
    r"^/_matrix/federation/v1/query/",
    r"^/_matrix/federation/v1/make_join/",
    r"^/_matrix/federation/v1/make_leave/",
    r"^/_matrix/federation/(v1|v2)/send_join/",
    r"^/_matrix/federation/(v1|v2)/send_leave/",
    r"^/_matrix/federation/v1/make_knock/",
    r"^/_matrix/federation/v1/send_knock/",
    r"^/_matrix/federation/(v1|v2)/invite/",
    r"^/_matrix/federation/v1/event_auth/",
    r"^/_matrix/federation/v1/timestamp_to_event/",
    r"^/_matrix/federation/v1/exchange_third_party_invite/",
    r"^/_matrix/federation/v1/user/devices/",
    r"^/_matrix/key/v2/query",
    r"^/_matrix/federation/v1/hierarchy/",
)

FEDERATION_SEND = (r"^/_matrix/federation/v1/send/",)
"""Inbound transactions: balanced by the sending server's address, so one server's transactions
reach one process (as the documentation asks)."""

_CLIENT = r"(api/v1|r0|v3|unstable)"
_CLIENT_NO_V1 = r"(r0|v3|unstable)"

CLIENT = (
    rf"^/_matrix/client/{_CLIENT}/createRoom$",
    rf"^/_matrix/client/{_CLIENT}/publicRooms$",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/joined_members$",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/context/.*$",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/members$",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/state$",
    r"^/_matrix/client/v1/rooms/.*/hierarchy$",
    r"^/_matrix/client/(v1|unstable)/rooms/.*/relations/",
    r"^/_matrix/client/v1/rooms/.*/threads$",
    r"^/_matrix/client/unstable/im.nheko.summary/summary/.*$",
    r"^/_matrix/client/v1/room_summary/.*$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/account/3pid$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/account/whoami$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/account/deactivate$",
    r"^/_matrix/client/(r0|v3)/delete_devices$",
    rf"^/_matrix/client/{_CLIENT}/devices(/|$)",
    r"^/_matrix/client/versions$",
    rf"^/_matrix/client/{_CLIENT}/voip/turnServer$",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/event/",
    rf"^/_matrix/client/{_CLIENT}/joined_rooms$",
    r"^/_matrix/client/v1/rooms/.*/timestamp_to_event$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases",
    rf"^/_matrix/client/{_CLIENT}/search$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/user/.*/filter(/|$)",
    rf"^/_matrix/client/{_CLIENT}/directory/room/.*$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/capabilities$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/notifications$",
    # encryption
    rf"^/_matrix/client/{_CLIENT_NO_V1}/keys/query$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/keys/changes$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/keys/claim$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/room_keys/",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/keys/upload",
    rf"^/_matrix/client/{_CLIENT}/keys/device_signing/upload$",
    rf"^/_matrix/client/{_CLIENT}/keys/signatures/upload$",
    # registration and login
    rf"^/_matrix/client/{_CLIENT}/login$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/register$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/register/available$",
    r"^/_matrix/client/v1/register/m.login.registration_token/validity$",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/password_policy$",
    # sending events
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/redact",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/send",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/state/",
    rf"^/_matrix/client/{_CLIENT}/rooms/.*/(join|invite|leave|ban|unban|kick)$",
    rf"^/_matrix/client/{_CLIENT}/join/",
    rf"^/_matrix/client/{_CLIENT}/knock/",
    rf"^/_matrix/client/{_CLIENT}/profile/",
    # the user directory
    rf"^/_matrix/client/{_CLIENT_NO_V1}/user_directory/search$",
)

CLIENT_GET = (
    rf"^/_matrix/client/{_CLIENT}/pushrules/",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/.*/tags",
    rf"^/_matrix/client/{_CLIENT_NO_V1}/.*/account_data",
    rf"^/_matrix/client/{_CLIENT}/presence/",
)
"""Served by any generic worker for GET alone (their writes go to the main process)."""

MEDIA = (
    r"^/_matrix/media/",
    r"^/_matrix/client/v1/media/",
    r"^/_matrix/federation/v1/media/",
)
"""With media workers the main process no longer serves these (enable_media_repo: false).

The media admin API (`/_synapse/admin/v1/media/...`, purge_media_cache, quarantine_media, a
user's or a room's media) moves to the media worker as well, but stays off Caddy's routes: the
admin API is never public here (the site proxies /_matrix and /_synapse/client only). An admin
reaches it on the main host at the media worker's own port on loopback (127.0.0.1:PORT, the
port workers.plan says), as the rest of the admin API at 127.0.0.1:8008."""


@dataclass(frozen=True)
class Group:
    """A set of endpoints Caddy sends to the workers that serve it, balanced one way."""

    name: str
    patterns: tuple[str, ...]
    policy: str = "round_robin"
    policy_header: str = ""
    methods: tuple[str, ...] = ()
    federation: bool = False
    """Other servers' requests: also routed on the federation port's site, when there is one."""


GROUPS = (
    Group("media", MEDIA, "least_conn", federation=True),
    # The same user's syncs to the same process (its caches are warm for them): by access token.
    Group("sync", SYNC, "header", "Authorization"),
    Group("federation_send", FEDERATION_SEND, "ip_hash", federation=True),
    Group("federation", FEDERATION, "round_robin", federation=True),
    Group("client", CLIENT, "round_robin"),
    Group("client_get", CLIENT_GET, "round_robin", methods=("GET",)),
)
"""In the order Caddy tries them (media first: its federation path would otherwise look like federation's)."""
