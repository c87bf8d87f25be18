// FedAvg's rounds as the palette and the notebook tell them: one summary shape, each drop in VS Code's
// words, and each node's row told why it sat out. No vscode import: the notebook bridge uses it too.
import { ErrorCodes, GridError, isErrorCode } from '../core/errors';
import type { RoundReport } from '../federation/fedavg';
import { inVsCodeWords } from './wording';

/** A participant that gave no update in a round, and why. */
export interface DroppedParticipant {
  node: string;
  round: number;
  error: { code: string; message: string };
}

export interface FedAvgSummary {
  /** The served result, `name@N`. */
  model: string;
  node: string;
  rounds: { round: number; train: { loss: number; accuracy: number }; test?: { loss: number; accuracy: number }; dropped: DroppedParticipant[] }[];
}

/** A node as the sidebar shows it: the name the user knows, and the row that says why it sat out. */
export interface FedAvgNode {
  readonly name: string;
  noteDropped?(note: { what: string; error: { code: string; message: string } } | undefined): void;
}

export class FedAvgReport {
  readonly summary: FedAvgSummary;
  private readonly what: string;
  private readonly nodes: readonly FedAvgNode[];
  private readonly droppedBy = new Map<FedAvgNode, DroppedParticipant[]>();

  /** `nodes[i]` is the node of participant i; their rows forget an earlier run's drop. */
  constructor(modelId: string, home: string, nodes: readonly FedAvgNode[]) {
    this.summary = { model: modelId, node: home, rounds: [] };
    this.what = `FedAvg of ${modelId}`;
    this.nodes = nodes;
    for (const n of new Set(nodes)) n.noteDropped?.(undefined);
  }

  /** Adds a round to the summary; its drops, in VS Code's words, also go to their nodes' rows. */
  round(r: RoundReport): DroppedParticipant[] {
    const dropped = r.dropped.map((d) => {
      const node = this.nodes[d.participant]!;
      // A node's "authenticate first (grid: --user…)" becomes "sign in to NODE (Grid: Authenticate)".
      const e = inVsCodeWords(new GridError(isErrorCode(d.error.code) ? d.error.code : ErrorCodes.INTERNAL, d.error.message), node.name);
      const drop = { node: d.name, round: r.round, error: { code: e.code, message: e.message } };
      const all = [...(this.droppedBy.get(node) ?? []), drop];
      this.droppedBy.set(node, all);
      node.noteDropped?.({ what: `${this.what}, round${all.length > 1 ? 's' : ''} ${all.map((x) => x.round).join(', ')}`, error: drop.error });
      return drop;
    });
    this.summary.rounds.push({ round: r.round, train: r.train, ...(r.test && { test: r.test }), dropped });
    return dropped;
  }

  /** One line a node that sat out: which rounds, and the latest reason. */
  satOut(): string[] {
    return [...this.droppedBy.values()].map((ds) => `${ds[0]!.node} sat out round${ds.length > 1 ? 's' : ''} ${ds.map((d) => d.round).join(', ')}: ${ds.at(-1)!.error.message} (${ds.at(-1)!.error.code})`);
  }
}

/** A FedAvg warning (a participant that cannot take part, an evaluation that failed) in VS Code's words. */
export function fedAvgWarning(message: string, error: GridError): string {
  return inVsCodeWords(new GridError(error.code, message), undefined).message;
}
