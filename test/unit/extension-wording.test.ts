// Node and CLI messages in VS Code's words (src/extension/wording.ts has no vscode import): every way the
// node and the CLI word their sign-in hint becomes the VS Code action, code and details kept.
import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gridError } from '../../src/core/errors';
import { inVsCodeWords } from '../../src/extension/wording';

describe('inVsCodeWords', () => {
  it('rewrites the node\'s UNAUTHENTICATED hint to name Grid: Authenticate and the node', () => {
    const e = inVsCodeWords(gridError('UNAUTHENTICATED', 'run-inference needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)', { model_id: 'm' }), 'remote');
    assert.equal(e.message, 'run-inference needs an authenticated session: sign in to remote (Grid: Authenticate)');
    assert.equal(e.code, 'GRID_ERR_UNAUTHENTICATED');
    assert.deepEqual(e.details, { model_id: 'm' });
  });

  it('rewrites the CLI\'s own wording, and names "the node" when the node is not known', () => {
    assert.equal(inVsCodeWords(gridError('UNAUTHENTICATED', 'fedavg trains on the nodes: pass --user and --password (or set GRID_USER and GRID_PASSWORD) for ws://h:1'), undefined).message,
      'fedavg trains on the nodes: sign in to the node (Grid: Authenticate) for ws://h:1');
  });

  it('points a taken local-node port at the grid.localNode.port setting, not at --port', () => {
    const e = inVsCodeWords(gridError('PORT_IN_USE', 'the local node did not start: port 5999 on 127.0.0.1 is in use by another program; pass --port 0 to pick a free one'), undefined);
    assert.equal(e.code, 'GRID_ERR_PORT_IN_USE');
    assert.equal(e.message, 'the local node did not start: port 5999 on 127.0.0.1 is in use by another program; set grid.localNode.port to 0 (a free port) or another port in Settings, then run Grid: Start Local Node again');
  });

  it('tells a VS Code user which process holds the local node\'s data dir, not to pass --data-dir', () => {
    const e = inVsCodeWords(gridError('DATA_DIR_IN_USE', 'the local node did not start: its data dir /d is held by process 4242, which is not a local node starting up (no local-node record within 10 s): a grid-node started without --local on that data dir, or a start that hangs; stop it or pass another --data-dir', { pid: 4242 }), undefined);
    assert.equal(e.code, 'GRID_ERR_DATA_DIR_IN_USE');
    assert.doesNotMatch(e.message, /pass another --data-dir/);
    assert.match(e.message, /held by process 4242, .*; stop process 4242 \(or run it on another --data-dir\), then run Grid: Start Local Node again/);
  });

  it('leaves other messages as they are (the same error object)', () => {
    const e = gridError('FORBIDDEN', 'node x refused the download of model "m": allow_download is false');
    assert.equal(inVsCodeWords(e, 'x'), e);
    assert.equal(inVsCodeWords(new Error('plain'), 'x').message, 'plain');
  });
});
