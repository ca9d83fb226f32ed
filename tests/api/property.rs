// tests: property
