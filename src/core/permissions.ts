// One rule for the permissions of a model made from another (a trained version, a FedAvg result): what
// the user said, else the source model's flags, else private. The node applies it to training jobs
// (src/node/training/jobs.ts); clients apply it where they host a result themselves (FedAvg).

import type { ModelInfo } from './protocol/messages';

export interface PermissionFlags {
  allowDownload?: boolean;
  allowRemoteInference?: boolean;
}

/** The flags of a result: each explicit flag wins, else the source's (a hosted model), else false. */
export function inheritedPermissions(explicit: PermissionFlags, source: Pick<ModelInfo, 'allow_download' | 'allow_remote_inference'> | undefined): Required<PermissionFlags> {
  return {
    allowDownload: explicit.allowDownload ?? source?.allow_download ?? false,
    allowRemoteInference: explicit.allowRemoteInference ?? source?.allow_remote_inference ?? false,
  };
}
