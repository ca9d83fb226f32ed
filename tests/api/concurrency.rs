// tests: concurrency
