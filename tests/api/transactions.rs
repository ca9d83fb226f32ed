// tests: transactions
