// Imported first by main.ts, so this runs when the activation bundle starts evaluating: the e2e suite
// reads it to split activation into VS Code's part, our module evaluation, and activate().
export const loadStartedAt = performance.now();
