"""What the retailer serves: the DynamoDB feeds tables and their load, the served-version pointer,
retention and rollback, and the read API.

- `tables`: DynamoDB clients, table names, creating, sizing, listing and deleting tables;
- `manifests`: a launch's feeds manifest and the lake files it lists (checks, checksums);
- `payloads`: a lake payload line <-> a feeds table item, and the reads the API makes;
- `loader`: the batch load of a version, its verification, and the freshness refresh;
- `control`: the control item: served-version pointer, flip, loaded marks, coverage check;
- `retention`: which old tables to delete and which version a rollback serves;
- `errors`: the store's errors; `api`, `dynamodb_reader`: the read API.
"""
