// When a notebook cell announces its end (src/extension/notebook/long-cell.ts has no vscode import):
// only long cells, only when the user is not watching them, in words naming the cell and its outcome.
import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LONG_CELL_MS, longCellNotice, type EndedCell } from '../../src/extension/notebook/long-cell';

const cell = (over: Partial<EndedCell> = {}): EndedCell => ({ status: 'ok', startTime: 1_000, endTime: 1_000 + 12_400, index: 2, notebookName: 'starter.ipynb', ...over });
const away = { windowFocused: false, cellVisible: true };

describe('long-cell notification', () => {
  it('a 12 s cell that ended while the window was not focused says which cell finished, and after how long', () => {
    assert.deepEqual(longCellNotice(cell(), away), { message: 'Cell 3 of starter.ipynb finished after 12 s.', level: 'info' });
  });

  it('a long cell scrolled out of view is announced even in a focused window', () => {
    assert.equal(longCellNotice(cell(), { windowFocused: true, cellVisible: false })?.message, 'Cell 3 of starter.ipynb finished after 12 s.');
  });

  it('someone watching the cell is not notified', () => {
    assert.equal(longCellNotice(cell(), { windowFocused: true, cellVisible: true }), undefined);
  });

  it('a cell shorter than the threshold is not announced; one of exactly the threshold is', () => {
    assert.equal(longCellNotice(cell({ endTime: 1_000 + LONG_CELL_MS - 1 }), away), undefined);
    assert.equal(longCellNotice(cell({ endTime: 1_000 + LONG_CELL_MS }), away)?.message, 'Cell 3 of starter.ipynb finished after 10 s.');
  });

  it('a failed or interrupted cell is a warning that says so; a cancelled one (never ran) is silent', () => {
    assert.deepEqual(longCellNotice(cell({ status: 'error' }), away), { message: 'Cell 3 of starter.ipynb failed after 12 s.', level: 'warning' });
    assert.deepEqual(longCellNotice(cell({ status: 'interrupted' }), away), { message: 'Cell 3 of starter.ipynb was interrupted after 12 s.', level: 'warning' });
    assert.equal(longCellNotice(cell({ status: 'cancelled', startTime: undefined }), away), undefined);
  });
});
