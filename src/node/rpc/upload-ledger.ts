// Where uploads in flight are recorded when several replicas of a node share one database and one blob
// dir (docs/replicas.md, "Uploads"): the partial file lives in the shared dir, and this ledger holds what
// another replica needs to continue it. The upload store (uploads.ts) works without one (one process: its
// memory is the record); the node gives it the SQL one (store/upload-records.ts) for replicas.

export interface UploadRecord {
  readonly id: string;
  readonly owner: string;
  readonly size: number;
  readonly chunkSize: number;
  /** Bytes on disk from offset 0 with no gap, as last recorded: where a resume elsewhere starts. */
  readonly received: number;
  /** Raised by every claim: the fencing token of the replica writing the upload now. */
  readonly claim: number;
  readonly touchedMs: number;
}

export interface UploadLedger {
  /** Records a new upload, claimed (claim 1) by this replica. */
  create(upload: { id: string; owner: string; size: number; chunkSize: number }): Promise<UploadRecord>;
  /**
   * Claims an upload of `owner` begun with `size` and `chunkSize` for this replica (its claim number goes
   * up, so the replica that wrote it before can no longer record progress); undefined when there is no such
   * upload.
   */
  claim(id: string, owner: string, size: number, chunkSize: number): Promise<UploadRecord | undefined>;
  /** The record, unclaimed; undefined when there is none. */
  get(id: string): Promise<UploadRecord | undefined>;
  /**
   * Records `received` contiguous bytes on disk (and the sha256 once committed) under claim `claim`; false
   * when another replica claimed the upload since (or it is gone): this replica must stop writing it.
   */
  progress(id: string, claim: number, received: number, sha256?: string): Promise<boolean>;
  remove(id: string): Promise<void>;
}
