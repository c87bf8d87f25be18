// Notebooks in the extension: the "Grid (TypeScript)" controller (owned by Ctx), its commands (New
// Notebook, Restart Kernel; registered from the command table) and the bridge's view of the sidebar's nodes.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { gridError, toGridError } from '../../core/errors';
import type { NodeConnection } from '../connection';
import type { Ctx } from '../ctx';
import { guarded, type Cmd } from '../pickers';
import type { BridgeNode, BridgeNodes } from './bridge';
import { CONTROLLER_ID, GridNotebookController, KERNELSPEC, LANGUAGE_INFO, NOTEBOOK_TYPE } from './controller';

export { GridNotebookController } from './controller';

/** The notebook controller, for Ctx to own; its commands are in the command table (commands.ts). */
export function createNotebookController(ctx: Ctx): GridNotebookController {
  return new GridNotebookController({
    extensionPath: ctx.extCtx.extensionPath,
    extensionId: ctx.extCtx.extension.id,
    log: {
      debug: (m) => ctx.log.debug(m), info: (m) => ctx.log.info(m), warn: (m) => ctx.log.warn(m), error: (m) => ctx.log.error(m),
    },
    nodes: sidebarNodes(ctx),
    requestTimeoutMs: () => ctx.config.requestTimeoutMs,
  });
}

/** The sidebar's connections, as the bridge sees them: a cell's connect is the Connect command's. */
export function sidebarNodes(ctx: Ctx): BridgeNodes {
  return {
    list: () => ctx.connections,
    find: (nameOrUrl) => ctx.find(nameOrUrl),
    connect: async (target, credentials) => {
      let conn: NodeConnection;
      if (target === undefined || target === 'local') {
        conn = await ctx.startLocalNode();
      } else {
        const known = ctx.find(target);
        if (known) {
          conn = known;
          // A listed node that is down: the cell fails with why, it does not wait for the node to come back.
          if (!conn.isOpen) await ctx.connectOrThrow(conn);
        } else {
          if (!/^wss?:\/\//.test(target)) throw gridError('NOT_FOUND', `no node named "${target}"; connect to a new one by its address, e.g. grid.connect("ws://127.0.0.1:5000")`);
          // Into the user's grid.nodes only once it answered: a typo or a node that is down is not kept.
          conn = await ctx.addNode({ name: new URL(target).host, url: target }, { onlyOnceOpen: true });
          // Once its id is known, a second address of a node already listed is that node (Ctx header).
          await conn.whenSynced();
          conn = ctx.primary(conn);
        }
      }
      if (credentials) await ctx.authenticate(conn, credentials);
      if (!conn.isOpen) throw gridError('NOT_CONNECTED', `${conn.name} (${conn.url}) is ${conn.state}${conn.stateReason ? `: ${conn.stateReason}` : ''}`);
      return conn satisfies BridgeNode;
    },
    disconnect: (node) => (node as NodeConnection).disconnect(),
  };
}

interface Ipynb {
  cells: { cell_type: 'code' | 'markdown' | 'raw'; source: string | string[]; metadata?: Record<string, unknown> }[];
  metadata?: Record<string, unknown>;
  nbformat: number;
  nbformat_minor: number;
}

/** Opens the starter notebook as a new untitled notebook on this kernel; nothing is written until saved. */
export function newNotebook(ctx: Ctx): Cmd {
  return guarded(ctx, 'New notebook failed', () => openStarterNotebook(ctx));
}

async function openStarterNotebook(ctx: Ctx): Promise<vscode.NotebookEditor> {
  const file = join(ctx.extCtx.extensionPath, 'media', 'samples', 'starter.ipynb');
  let nb: Ipynb;
  try {
    nb = JSON.parse(await readFile(file, 'utf8')) as Ipynb;
  } catch (err) {
    throw gridError('INTERNAL', `the starter notebook ${file} cannot be read: ${toGridError(err).message}`);
  }
  const cells = nb.cells.map((c) => {
    const source = Array.isArray(c.source) ? c.source.join('') : c.source;
    const cell = c.cell_type === 'markdown'
      ? new vscode.NotebookCellData(vscode.NotebookCellKind.Markup, source, 'markdown')
      : new vscode.NotebookCellData(vscode.NotebookCellKind.Code, source, 'typescript');
    if (c.metadata) cell.metadata = { metadata: c.metadata };
    return cell;
  });
  const data = new vscode.NotebookData(cells);
  data.metadata = { nbformat: nb.nbformat, nbformat_minor: nb.nbformat_minor, metadata: { ...nb.metadata, kernelspec: KERNELSPEC, language_info: LANGUAGE_INFO } };
  const doc = await vscode.workspace.openNotebookDocument(NOTEBOOK_TYPE, data);
  const editor = await vscode.window.showNotebookDocument(doc);
  await vscode.commands.executeCommand('notebook.selectKernel', { editor, id: CONTROLLER_ID, extension: ctx.extCtx.extension.id });
  return editor;
}

/** Restarts a notebook's kernel: the toolbar's notebook, or from the palette the active one. */
export function restartKernel(ctx: Ctx): Cmd {
  return guarded(ctx, 'Restart kernel failed', async (arg: unknown) => {
    const uri = (arg as { notebookEditor?: { notebookUri?: vscode.Uri } } | undefined)?.notebookEditor?.notebookUri;
    const notebook = (uri && vscode.workspace.notebookDocuments.find((n) => n.uri.toString() === uri.toString())) ?? vscode.window.activeNotebookEditor?.notebook;
    if (!notebook) throw gridError('NOT_FOUND', 'no notebook is open: open one and run a cell on "Grid (TypeScript)" first');
    const restarted = await ctx.notebooks.restart(notebook);
    if (!restarted) {
      void vscode.window.showInformationMessage('This notebook has no Grid kernel running yet; it starts with the first cell you run.');
      return;
    }
    void vscode.window.showInformationMessage('Kernel restarted: variables, functions and imports from earlier cells are gone.');
  });
}
