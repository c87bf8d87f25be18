// What the Jupyter extension (ms-toolsai.jupyter) offers when it is installed, through its published API
// (@vscode/jupyter-extension's typings, type-only: nothing of it is bundled). Optional: without the
// extension these functions say so and the rest of Grid Workbench works as before.
// Serve Torch Module from Notebook…: in a Python notebook run by the Jupyter extension, list the
// torch.nn.Module variables of that notebook's kernel, run torch.onnx.export for the chosen one in the
// same kernel (kernels.getKernel(uri) → executeCode), and serve the bytes like Serve Model… does.
import type { Jupyter, Kernel } from '@vscode/jupyter-extension';
import * as vscode from 'vscode';
import { gridError, GridError } from '../core/errors';
import type { Ctx } from './ctx';
import { guarded, withProgress, type Cmd, type Flow } from './pickers';
import { serveTo, type ServeArgs } from './serve';
import { formatBytes } from './views/items';

export const JUPYTER_EXTENSION_ID = 'ms-toolsai.jupyter';
/** The most an export may weigh: the bytes travel base64 on the kernel's stdout. */
export const MAX_EXPORT_BYTES = 256 * 1024 * 1024;
const PY_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A torch.nn.Module variable of the notebook's kernel. */
export interface TorchModule {
  name: string;
  /** Its class, e.g. Sequential. */
  type: string;
  parameters: number;
  /** An input shape that fits the module's first layer, when that layer says (Linear: [1, in_features]). */
  inputShape?: number[];
}

/** The running Python kernel of a notebook, through the Jupyter extension's API. Throws, coded, why not. */
export async function notebookKernel(notebook: vscode.NotebookDocument): Promise<Kernel> {
  const ext = vscode.extensions.getExtension<Jupyter>(JUPYTER_EXTENSION_ID);
  if (!ext) throw gridError('NOT_FOUND', `serving from a Python notebook needs the Jupyter extension (${JUPYTER_EXTENSION_ID}); install it, or export the model to an .onnx file and use "Grid: Serve Model…"`);
  const api = ext.isActive ? ext.exports : await ext.activate();
  if (!api?.kernels) throw gridError('NOT_FOUND', `this version of the Jupyter extension (${ext.packageJSON?.version ?? 'unknown'}) has no kernels API; update it`);
  const kernel = await api.kernels.getKernel(notebook.uri);
  const name = notebook.uri.path.split('/').pop() ?? 'the notebook';
  if (!kernel) throw gridError('NOT_FOUND', `${name} has no running Jupyter kernel: run a cell of it first (the model must be a variable of its kernel)`);
  if (kernel.language !== 'python') throw gridError('NOT_FOUND', `${name} runs a ${kernel.language} kernel; serving a notebook variable needs a Python kernel with torch`);
  return kernel;
}

/** Runs `code` in `kernel` and returns what it printed; an error output or a failed run throws. */
export async function runInKernel(kernel: Kernel, code: string, token: vscode.CancellationToken): Promise<string> {
  const decoder = new TextDecoder();
  let stdout = '';
  let stderr = '';
  for await (const output of kernel.executeCode(code, token)) {
    for (const item of output.items) {
      // The typings name application/x.notebook.stream.*; VS Code's own items are application/vnd.code.notebook.*.
      if (item.mime.endsWith('.stdout')) stdout += decoder.decode(item.data);
      else if (item.mime.endsWith('.stderr')) stderr += decoder.decode(item.data);
      else if (item.mime === 'application/vnd.code.notebook.error') {
        const e = JSON.parse(decoder.decode(item.data)) as { name?: string; message?: string };
        throw gridError('INTERNAL', `the notebook's kernel raised ${e.name ?? 'an error'}: ${e.message ?? ''}`.trim(), { stderr: stderr.slice(-2000) });
      }
    }
    if (token.isCancellationRequested) break;
  }
  if (token.isCancellationRequested) throw gridError('ABORTED', 'cancelled');
  return stdout;
}

const LIST_MARK = '@@grid-torch-modules@@';
const BEGIN_MARK = '@@grid-onnx-begin@@';
const END_MARK = '@@grid-onnx-end@@';

// Python run in the user's kernel: one function defined, called and deleted, so the namespace is as it was.
const LIST_CODE = `
def _grid_list_modules():
    import json, sys
    torch = sys.modules.get('torch')
    found = []
    if torch is not None:
        for name, value in list(globals().items()):
            if name.startswith('_') or not isinstance(value, torch.nn.Module):
                continue
            first = next((m for m in value.modules() if isinstance(getattr(m, 'in_features', None), int)), None)
            found.append({'name': name, 'type': type(value).__name__,
                          'parameters': int(sum(p.numel() for p in value.parameters())),
                          'inputShape': [1, first.in_features] if first is not None else None})
    print(${JSON.stringify(LIST_MARK)} + json.dumps({'torch': torch is not None, 'modules': found}))
try:
    _grid_list_modules()
finally:
    del _grid_list_modules
`;

function exportCode(name: string, shape: number[]): string {
  return `
def _grid_export(name, shape, limit):
    import base64, inspect, io, sys
    torch = sys.modules['torch']
    model = globals()[name]
    param = next(model.parameters(), None)
    example = torch.zeros(*shape)
    if param is not None and param.is_floating_point():
        example = example.to(dtype=param.dtype, device=param.device)
    options = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), buf, input_names=['input'], output_names=['output'],
                              dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}}, **options)
    finally:
        model.train(training)
    data = buf.getvalue()
    if len(data) > limit:
        raise ValueError('the exported model is %d bytes; at most %d can be served from a notebook' % (len(data), limit))
    text = base64.b64encode(data).decode('ascii')
    sys.stdout.write(${JSON.stringify(BEGIN_MARK)} + str(len(data)) + '\\n')
    for i in range(0, len(text), 1 << 20):
        sys.stdout.write(text[i:i + (1 << 20)] + '\\n')
    sys.stdout.write(${JSON.stringify(END_MARK)} + '\\n')
    sys.stdout.flush()
try:
    _grid_export(${JSON.stringify(name)}, ${JSON.stringify(shape)}, ${MAX_EXPORT_BYTES})
finally:
    del _grid_export
`;
}

/** The torch.nn.Module variables of the kernel's namespace (none when torch is not imported there). */
export async function listTorchModules(kernel: Kernel, token: vscode.CancellationToken): Promise<{ torch: boolean; modules: TorchModule[] }> {
  const out = await runInKernel(kernel, LIST_CODE, token);
  const line = out.split('\n').find((l) => l.startsWith(LIST_MARK));
  if (!line) throw gridError('INTERNAL', `the notebook's kernel did not answer the list of torch modules (it printed ${JSON.stringify(out.slice(0, 200))})`);
  const parsed = JSON.parse(line.slice(LIST_MARK.length)) as { torch: boolean; modules: (Omit<TorchModule, 'inputShape'> & { inputShape: number[] | null })[] };
  return { torch: parsed.torch, modules: parsed.modules.map(({ inputShape, ...m }) => ({ ...m, ...(inputShape && { inputShape }) })) };
}

/** Runs torch.onnx.export for the variable `name` in the kernel (an example input of `shape`) and returns the ONNX bytes. */
export async function exportTorchModule(kernel: Kernel, name: string, shape: number[], token: vscode.CancellationToken): Promise<Uint8Array> {
  if (!PY_NAME.test(name)) throw new RangeError(`name: "${name}" is not a Python variable name`);
  if (shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d > 0)) throw new RangeError(`shape: ${JSON.stringify(shape)} is not a list of positive whole numbers`);
  let out: string;
  try {
    out = await runInKernel(kernel, exportCode(name, shape), token);
  } catch (err) {
    if (err instanceof GridError && err.code === 'GRID_ERR_INTERNAL') {
      throw gridError('INVALID_MODEL', `torch.onnx.export of ${name} failed in the notebook's kernel: ${err.message.replace(/^the notebook's kernel raised /, '')}`);
    }
    throw err;
  }
  const begin = out.indexOf(BEGIN_MARK);
  const end = out.indexOf(END_MARK, begin);
  if (begin < 0 || end < 0) throw gridError('INTERNAL', `the notebook's kernel printed no exported model for ${name}`);
  const body = out.slice(begin + BEGIN_MARK.length, end);
  const newline = body.indexOf('\n');
  const size = Number(body.slice(0, newline));
  const bytes = Buffer.from(body.slice(newline + 1).replace(/\s+/g, ''), 'base64');
  if (bytes.length !== size) throw gridError('INTERNAL', `the export of ${name} arrived incomplete: ${bytes.length} of ${size} bytes`);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

interface NotebookServeArgs extends ServeArgs {
  /** The notebook (its URI, as a string); the active notebook when not given. */
  notebook?: string;
  /** The variable to export; asked for when not given. */
  variable?: string;
  /** The example input's shape for the export, e.g. [1, 4]; asked for when not given. */
  inputShape?: number[];
}

/** The notebook a command runs on: the toolbar's, the argument's, or the active one. */
function notebookOf(arg: unknown): vscode.NotebookDocument {
  const a = (typeof arg === 'object' && arg !== null ? arg : {}) as { notebookEditor?: { notebookUri?: vscode.Uri }; notebook?: string };
  const uri = a.notebookEditor?.notebookUri?.toString() ?? a.notebook;
  const notebook = uri !== undefined ? vscode.workspace.notebookDocuments.find((n) => n.uri.toString() === uri) : vscode.window.activeNotebookEditor?.notebook;
  if (!notebook) throw gridError('NOT_FOUND', uri !== undefined ? `the notebook ${uri} is not open` : 'no notebook is open: open the Python notebook that holds the model');
  return notebook;
}

function parseShape(text: string): number[] | undefined {
  const dims = text.split(/[\s,x×]+/).filter(Boolean).map(Number);
  return dims.length > 0 && dims.every((d) => Number.isInteger(d) && d > 0) ? dims : undefined;
}

/** A cancellation token that follows an AbortSignal (withProgress's Cancel). */
function tokenOf(signal: AbortSignal): vscode.CancellationTokenSource {
  const source = new vscode.CancellationTokenSource();
  if (signal.aborted) source.cancel();
  else signal.addEventListener('abort', () => source.cancel(), { once: true });
  return source;
}

/** Grid: Serve Torch Module from Notebook… (notebook toolbar of a Python notebook, or the palette). */
export function serveNotebookModel(ctx: Ctx): Cmd {
  return guarded(ctx, 'Could not serve the notebook\'s model', async (arg: unknown, flow: Flow) => {
    const isOptions = typeof arg === 'object' && arg !== null && !('notebookEditor' in arg);
    const a = (isOptions ? arg : {}) as NotebookServeArgs;
    Object.assign(flow.answers, a);
    const notebook = notebookOf(arg);
    flow.answers.notebook = notebook.uri.toString();
    const notebookName = notebook.uri.path.split('/').pop() ?? 'notebook';
    const kernel = await notebookKernel(notebook);
    const listing = new vscode.CancellationTokenSource();
    let found: Awaited<ReturnType<typeof listTorchModules>>;
    try {
      found = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: `Looking for torch models in ${notebookName}` }, () => listTorchModules(kernel, listing.token));
    } finally {
      listing.dispose();
    }
    if (!found.torch) throw gridError('NOT_FOUND', `${notebookName}'s kernel has not imported torch: run the cells that build the model first`);
    let module: TorchModule | undefined;
    if (a.variable !== undefined) {
      module = found.modules.find((m) => m.name === a.variable);
      if (!module) throw gridError('NOT_FOUND', `${notebookName}'s kernel has no torch.nn.Module named "${a.variable}"; it has ${found.modules.map((m) => m.name).join(', ') || 'none'}`);
    } else {
      if (found.modules.length === 0) throw gridError('NOT_FOUND', `${notebookName}'s kernel holds no torch.nn.Module variable: run the cell that builds the model first`);
      const picked = await ctx.pick(found.modules.map((m) => ({ label: m.name, description: `${m.type} · ${m.parameters.toLocaleString('en-US')} parameters`, module: m })), {
        title: `Serve a model of ${notebookName}`, placeHolder: 'A torch.nn.Module variable of the notebook\'s kernel', matchOnDescription: true,
      });
      if (!picked) return undefined;
      module = picked.module;
    }
    flow.answers.variable = module.name;
    let shape = a.inputShape;
    if (shape === undefined) {
      const typed = await ctx.ask({
        title: `Export ${module.name} with torch.onnx.export`,
        prompt: 'Shape of an example input (the first dimension is the batch and stays variable), e.g. 1, 4 or 1, 3, 28, 28',
        ...(module.inputShape && { value: module.inputShape.join(', ') }),
      });
      if (typed === undefined) return undefined;
      shape = parseShape(typed);
      if (!shape) throw new RangeError(`"${typed}" is not a shape: whole numbers above 0, separated by commas`);
    }
    flow.answers.inputShape = shape;
    const exportShape = shape;
    const chosen = module;
    const bytes = await withProgress(`Exporting ${chosen.name} from ${notebookName} (torch.onnx.export)`, (signal) => {
      const token = tokenOf(signal);
      return exportTorchModule(kernel, chosen.name, exportShape, token.token).finally(() => token.dispose());
    });
    ctx.log.info(`exported ${chosen.name} of ${notebookName}: ${formatBytes(bytes.length)} of ONNX`);
    return serveTo(ctx, flow, a, { model: bytes, label: `${chosen.name} (${notebookName})`, suggestedId: chosen.name });
  });
}
