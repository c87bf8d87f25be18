// Whether a cell that ended announces it, and in which words. No `vscode` here: the controller
// supplies what the window shows (focus, visible cells), so the rule is tested in plain Node.

/** Cells running at least this long announce their end when the user may not be watching. */
export const LONG_CELL_MS = 10_000;

export interface LongCellNotice {
  /** e.g. "Cell 3 of starter.ipynb finished after 12 s." */
  message: string;
  /** A cell that did not succeed is a warning. */
  level: 'info' | 'warning';
}

export interface EndedCell {
  status: 'ok' | 'error' | 'interrupted' | 'cancelled';
  startTime: number | undefined;
  endTime: number;
  /** 0-based, as VS Code counts; shown 1-based. */
  index: number;
  notebookName: string;
}

/**
 * A long cell announces its end only when the user is not looking at it: the window is not focused,
 * or no visible editor shows the cell. Someone watching the cell sees it end anyway.
 */
export function longCellNotice(cell: EndedCell, view: { windowFocused: boolean; cellVisible: boolean }): LongCellNotice | undefined {
  if (cell.status === 'cancelled' || cell.startTime === undefined) return undefined;
  const ms = cell.endTime - cell.startTime;
  if (ms < LONG_CELL_MS) return undefined;
  if (view.windowFocused && view.cellVisible) return undefined;
  const what = cell.status === 'ok' ? 'finished' : cell.status === 'interrupted' ? 'was interrupted' : 'failed';
  return { message: `Cell ${cell.index + 1} of ${cell.notebookName} ${what} after ${Math.round(ms / 1000)} s.`, level: cell.status === 'ok' ? 'info' : 'warning' };
}
