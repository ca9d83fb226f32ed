// tests: processes
