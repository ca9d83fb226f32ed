// tests: balances
