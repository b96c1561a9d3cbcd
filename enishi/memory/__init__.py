"""Customer memory in Redis: what the stream processor writes and CustomerService reads.

`apply.plan` turns a touchpoint into operations, `writer.MemoryWriter` applies them
atomically and idempotently per customer, `reader.MemoryReader` reads the 360 view and
the timeline back as `enishi.v1` messages. Key layout: `enishi.keys`, docs/keys.md.
"""
