// What Host FL Process and grid.fl.host start from (no imports: the activation bundle shows them).

/** Starting points for a process's server_config (reference §1.4); the user edits the JSON after picking. */
export const SERVER_CONFIG_PRESETS: readonly { label: string; detail: string; config: Record<string, unknown> }[] = [
  {
    label: 'Try it out', detail: 'a cycle closes at the first report; 3 cycles; any worker may come back',
    config: { min_workers: 1, max_workers: 10, pool_selection: 'iterate', min_diffs: 1, max_diffs: 1, num_cycles: 3, cycle_length: 3600 },
  },
  {
    label: 'Small group', detail: 'cycles of 3 reports (at most 10 minutes each), 10 cycles',
    config: { min_workers: 3, max_workers: 10, pool_selection: 'iterate', min_diffs: 3, max_diffs: 3, num_cycles: 10, cycle_length: 600 },
  },
  {
    label: 'PyGrid example (mnist)', detail: 'as the PySyft model-centric example: random pool of 5, no reuse for 6 cycles, 8 h cycles, 30 cycles',
    config: { min_workers: 5, max_workers: 5, pool_selection: 'random', do_not_reuse_workers_until_cycle: 6, cycle_length: 28800, num_cycles: 30, max_diffs: 1 },
  },
];

/** What workers are told to train with unless the host says otherwise. */
export const DEFAULT_CLIENT_CONFIG: Record<string, unknown> = { batch_size: 32, lr: 0.1, epochs: 1 };
