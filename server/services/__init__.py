"""The logic: no HTTP, no SQL text. Routes call services; services call the store."""
