// tests: errors_and_limits
