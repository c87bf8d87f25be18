// Imported for its effect by the helpers that start grid nodes: under the test runner (node --test sets
// NODE_TEST_CONTEXT), every node, in the test's process or a child that inherits its environment,
// validates each reply it sends against its schema and refuses a field the schema does not name
// (GridServerOptions.checkReplies), so a malformed reply of ours fails the test with GRID_ERR_INTERNAL.
// Product nodes skip that check on the hot path (the client validates what it receives), and so do the
// benchmarks, which import these helpers too.
if (process.env.NODE_TEST_CONTEXT !== undefined) process.env.GRID_CHECK_REPLIES ??= '1';
