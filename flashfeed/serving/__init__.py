"""What the retailer serves: the DynamoDB feeds tables, their load, the served-version pointer, retention and the read API."""
