"""The token store: format and identity, the token codec, shard files, writer and reader."""
