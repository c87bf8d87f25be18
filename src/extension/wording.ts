// Node and CLI messages in VS Code's words. The node tells an anonymous session how the `grid` CLI signs
// in (--user/--password, GRID_USER/GRID_PASSWORD); in VS Code the way is the Authenticate command, and
// the message names that instead. No vscode import: the notebook bridge words its errors the same way.
import { ErrorCodes, GridError, toGridError } from '../core/errors';

/** The CLI's ways to sign in, as the node and the CLI word them. */
const CLI_SIGN_IN = [
  /authenticate first \(grid: --user\/--password or GRID_USER\/GRID_PASSWORD\)/g,
  /pass --user and --password \(or set GRID_USER and GRID_PASSWORD\)/g,
  /--user\/--password or GRID_USER\/GRID_PASSWORD/g,
];

/** How a VS Code user signs in to `node`. */
export function signInHint(node: string | undefined): string {
  return `sign in to ${node ?? 'the node'} (Grid: Authenticate)`;
}

/**
 * `err` as a GridError whose message names VS Code's actions instead of the CLI's flags; the code and
 * details stay. `node` is the name the user knows the node by.
 */
export function inVsCodeWords(err: unknown, node: string | undefined): GridError {
  const e = toGridError(err);
  // The local node's port is a setting here, not a flag.
  if (e.code === ErrorCodes.PORT_IN_USE && CLI_PORT.test(e.message)) {
    return new GridError(e.code, e.message.replace(CLI_PORT, PORT_SETTING_HINT), e.details, { cause: e });
  }
  // The local node's data dir has no setting: the way out is to stop the process that holds it.
  if (e.code === ErrorCodes.DATA_DIR_IN_USE && CLI_DATA_DIR.test(e.message)) {
    const pid = typeof e.details?.pid === 'number' ? e.details.pid : /\(pid (\d+)\)|held by process (\d+)/.exec(e.message)?.slice(1).find((x) => x !== undefined);
    return new GridError(e.code, e.message.replace(CLI_DATA_DIR, dataDirHint(pid)), e.details, { cause: e });
  }
  if (!CLI_SIGN_IN.some((re) => { re.lastIndex = 0; return re.test(e.message); })) return e;
  let message = e.message;
  for (const re of CLI_SIGN_IN) message = message.replace(re, signInHint(node));
  return new GridError(e.code, message, e.details, { cause: e });
}

/** How the node tells a CLI user to pick a free port. */
const CLI_PORT = /pass --port 0 to pick a free one/;
const PORT_SETTING_HINT = 'set grid.localNode.port to 0 (a free port) or another port in Settings, then run Grid: Start Local Node again';

/** How the node tells a CLI user to free its data dir. */
const CLI_DATA_DIR = /stop it or pass another --data-dir/;
function dataDirHint(pid: number | string | undefined): string {
  return `stop ${pid === undefined ? 'that process' : `process ${pid}`} (or run it on another --data-dir), then run Grid: Start Local Node again; the local node's data dir is the per-user one (GRID_DATA_DIR in VS Code's environment changes it)`;
}

/** Errors a sign-in (or a sign-in as someone else) may fix. */
export function needsSignIn(e: GridError): boolean {
  return e.code === ErrorCodes.UNAUTHENTICATED || e.code === ErrorCodes.BAD_CREDENTIALS || e.code === ErrorCodes.FORBIDDEN;
}
