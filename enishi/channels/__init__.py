"""Channel services' shared core: the sender Protocol, the consumer framework, provider adapters.

A channel service (`services/<channel>/`) wires its settings to one adapter here and runs
`consumer.run_channel`. docs/channels.md describes the contract for writing your own.
"""
