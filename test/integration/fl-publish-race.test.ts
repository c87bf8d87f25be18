// A checkpoint becomes one model version, however many replicas publish it at once (src/node/fl/store.ts
// setModelVersion): two engines over one database both find checkpoint 2 unpublished at start and both
// store it; the second one's model transaction rolls back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { silentLogger } from '../../src/core/logger';
import { FlEngine } from '../../src/node/fl/cycles';
import { encodeState, type StateTensor } from '../../src/node/fl/state';
import { FlStore } from '../../src/node/fl/store';
import { EmbeddedStore } from '../../src/node/store/db';
import { tempDir } from '../helpers/node-fixtures';

const model: StateTensor[] = [{ dims: [2], data: Float32Array.from([1, 2]) }];

test('two replicas publishing the same checkpoint at once make one model version of it', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('grid-fl-publish-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(() => db.close());
  // Stands for the model store: a version row per stored checkpoint, in the transaction that calls commit.
  await db.run('CREATE TABLE test_versions (version TEXT NOT NULL)');
  const host = new FlEngine({ store: new FlStore(db, dir), log: silentLogger });
  await host.start();
  const p = await host.host({ owner: 'admin', model: encodeState(model), plans: {}, protocols: {}, averagingPlan: undefined, clientConfig: { name: 'linked', version: '1' }, serverConfig: { max_diffs: 1 }, linked: { id: 'm', version: '1' } });
  await host.close();
  // Checkpoint 2 committed by a close, not yet a model version (its closer was killed before publishing).
  const first = (await new FlStore(db, dir).checkpoint(p.id, 1))!;
  await db.run("INSERT INTO fl_checkpoints (process_id, number, alias, sha256, cycle, reports, created) VALUES (?, 2, '', ?, 1, 1, ?)", [p.id, first.sha256, new Date().toISOString()]);

  // Both replicas have read the checkpoint as unpublished before either stores its version.
  let entered = 0;
  let release!: () => void;
  const bothIn = new Promise<void>((resolve) => { release = resolve; });
  let next = 2;
  const replica = () => new FlEngine({
    store: new FlStore(db, dir), log: silentLogger,
    publish: async (_p, checkpoint, parent, commit) => {
      assert.equal(checkpoint.number, 2);
      assert.equal(parent, '1');
      if (++entered === 2) release();
      await bothIn;
      await db.transaction(async () => {
        const version = String(next++);
        await db.run('INSERT INTO test_versions (version) VALUES (?)', [version]);
        await commit(version);
      });
    },
  });
  const a = replica();
  const b = replica();
  await Promise.all([a.start(), b.start()]);
  await Promise.all([a.published(p.id), b.published(p.id)]);
  await a.close();
  await b.close();

  const versions = (await db.all('SELECT version FROM test_versions')).map((r) => String(r.version));
  assert.equal(versions.length, 1, `one model version of checkpoint 2, got ${versions.join(', ')}`);
  assert.equal((await new FlStore(db, dir).checkpoint(p.id, 2))?.modelVersion, versions[0]);
});
