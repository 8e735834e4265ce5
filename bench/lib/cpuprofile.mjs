/**
 * Reading a V8 CPU profile (`node --cpu-prof`, the Chrome DevTools Protocol `Profiler.Profile`
 * format: https://chromedevtools.github.io/devtools-protocol/tot/Profiler/#type-Profile) into
 * self and inclusive time per function, so the bench can say where a Check's microseconds go.
 */

/**
 * @typedef {{id: number, callFrame: {functionName: string, url: string, lineNumber: number, columnNumber: number},
 *            children?: number[]}} ProfileNode
 * @typedef {{nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number}} CpuProfile
 * @typedef {{fn: string, where: string, selfUs: number, totalUs: number}} FunctionTime
 */

/**
 * `name (file:line)` with the path shortened to what follows node_modules/ or the repo root.
 * @param {ProfileNode['callFrame']} f
 * @param {string} repoRoot
 */
function locate(f, repoRoot) {
  let url = f.url.replace(/^file:\/\//, '');
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) url = url.slice(nm + '/node_modules/'.length);
  else if (url.startsWith(repoRoot + '/')) url = url.slice(repoRoot.length + 1);
  return url === '' ? '' : `${url}:${f.lineNumber + 1}`;
}

/**
 * Self and inclusive microseconds per function (same name and location merged; a function that
 * recurses counts once per sample in its inclusive time), sorted by self time.
 * @param {CpuProfile} profile
 * @param {string} repoRoot
 * @returns {{functions: FunctionTime[], totalUs: number, idleUs: number, gcUs: number, programUs: number}}
 */
export function functionTimes(profile, repoRoot) {
  /** @type {Map<number, ProfileNode>} */
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  /** @type {Map<number, number>} */
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  /** @type {Map<number, string>} node id → function key */
  const keyOf = new Map();
  /** @type {Map<string, FunctionTime>} */
  const fns = new Map();
  for (const n of profile.nodes) {
    const fn = n.callFrame.functionName || '(anonymous)';
    const where = locate(n.callFrame, repoRoot);
    const key = `${fn}\u0000${where}`;
    keyOf.set(n.id, key);
    if (!fns.has(key)) fns.set(key, { fn, where, selfUs: 0, totalUs: 0 });
  }
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time since the previous sample; it belongs to sample i - 1's stack.
    const dt = profile.timeDeltas[i + 1] ?? 0;
    const id = /** @type {number} */ (profile.samples[i]);
    if (dt <= 0) continue;
    totalUs += dt;
    const self = fns.get(/** @type {string} */ (keyOf.get(id)));
    if (self) self.selfUs += dt;
    const seen = new Set();
    for (let cur = /** @type {number | undefined} */ (id); cur !== undefined; cur = parent.get(cur)) {
      const k = /** @type {string} */ (keyOf.get(cur));
      if (seen.has(k) || !byId.has(cur)) continue;
      seen.add(k);
      const f = fns.get(k);
      if (f) f.totalUs += dt;
    }
  }
  const functions = [...fns.values()].filter((f) => f.selfUs > 0 || f.totalUs > 0).sort((a, b) => b.selfUs - a.selfUs);
  const special = (name) => functions.find((f) => f.fn === name)?.selfUs ?? 0;
  return { functions, totalUs, idleUs: special('(idle)'), gcUs: special('(garbage collector)'), programUs: special('(program)') };
}

/**
 * Inclusive time of the first function whose name matches `name` (and, if given, whose location
 * contains `whereIncludes`).
 * @param {FunctionTime[]} functions
 * @param {string} name
 * @param {string} [whereIncludes]
 */
export function inclusiveUs(functions, name, whereIncludes) {
  const hits = functions.filter((f) => f.fn === name && (whereIncludes === undefined || f.where.includes(whereIncludes)));
  return hits.reduce((m, f) => Math.max(m, f.totalUs), 0);
}
