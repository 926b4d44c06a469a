"""WebSocket close codes used by the server (4000 + the nearest HTTP status)."""

NORMAL = 1000
MESSAGE_TOO_BIG = 1009  # sent by aiohttp when max_msg_size is exceeded
INTERNAL = 1011  # unexpected server error on this connection (logged)
SERVICE_RESTART = 1012  # graceful shutdown; a {"type":"reconnect"} message precedes it
PROTOCOL = 4400  # too many bad messages
UNAUTHORIZED = 4401  # token missing/invalid/expired/revoked/for another session
FORBIDDEN = 4403  # role or place not allowed (role mismatch, second patient)
TIMEOUT = 4408  # idle logoff, or no join within the join timeout
REPLACED = 4409  # another connection took over this endpoint_id
REVOKED = 4410  # the token was revoked while connected
RATE_LIMITED = 4429  # messages/s, relay frames/s or join attempts per IP
CAPACITY = 4503  # endpoints per session or sessions per server exhausted
