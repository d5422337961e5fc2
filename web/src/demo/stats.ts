/**
 * Connection quality and media numbers from WebRTC stats reports, for the
 * tiles' quality badges and stats overlays (`statsview.ts` polls and draws).
 * Pure: reports and the previous sample's counters in, numbers out; no DOM,
 * no timers.
 */

/** A stats report (`RTCStatsReport` is one), or a plain `Map` built by hand. */
export type StatsReport = ReadonlyMap<string, RTCStats>;

export type Quality = 'good' | 'fair' | 'poor';

/**
 * Quality thresholds; the worst metric decides. The `fair` lines are the echo
 * test's "degraded" ones (media/report.py), so a tile and the echo page agree
 * on what a worse-than-it-should-be call is; the `poor` lines are where the
 * call itself breaks down.
 */
const THRESHOLDS = {
  // Packet loss, % of the last interval's packets. Opus concealment and video
  // retransmission (NACK) hide a few percent; past ~10 % speech drops out and
  // video freezes waiting for keyframes.
  lossPercent: { fair: 3, poor: 10 },
  // Round trip on the selected candidate pair. ITU-T G.114: up to 150 ms one way
  // (300 ms round trip) conversation is unaffected; past 400 ms one way (800 ms)
  // people talk over each other.
  rttMs: { fair: 300, poor: 800 },
  // Audio jitter. The jitter buffer absorbs it by adding as much delay: 50 ms is
  // a delay people notice; past 100 ms late packets are concealed (gaps). Video
  // jitter is not judged: a frame's packets leave in a burst, so it is high on
  // a good link too.
  jitterMs: { fair: 50, poor: 100 },
  // Decoded frames per second, only while the camera is on (a muted camera sends
  // a black frame now and then). Below 10 motion is choppy; below 5, a slideshow.
  fps: { fair: 10, poor: 5 },
} as const;

/** Cumulative counters of one kind of media, summed over its RTP streams. */
interface Counters {
  bytes: number;
  packets: number;
  lost: number;
  frames: number;
}

/** One sample's counters; the next sample's rates are the difference. */
export interface Sample {
  /** The newest RTP stats' `timestamp`, ms; 0 when there were none. */
  at: number;
  audio: Counters;
  video: Counters;
}

/** The selected candidate pair. */
export interface CandidatePath {
  rttMs: number | null;
  /** `host`, `srflx`, `prflx` or `relay`. */
  local: string | null;
  remote: string | null;
  /** `udp` / `tcp`, of our candidate. */
  protocol: string | null;
}

/** Rates are over the time since the previous sample: null on the first one (or after a counter reset). */
export interface InboundMedia {
  bitrateKbps: number | null;
  lossPercent: number | null;
  jitterMs: number | null;
  /** e.g. `VP8`, `opus`. */
  codec: string | null;
}

export interface InboundVideo extends InboundMedia {
  width: number | null;
  height: number | null;
  fps: number | null;
}

/** What we receive from one participant; `audio` / `video` null when no such stream arrives. */
export interface InboundStats {
  path: CandidatePath;
  audio: InboundMedia | null;
  video: InboundVideo | null;
  /** null while nothing could be judged yet. */
  quality: Quality | null;
  sample: Sample;
}

export interface OutboundVideo {
  bitrateKbps: number | null;
  width: number | null;
  height: number | null;
  fps: number | null;
  codec: string | null;
}

/** What we send, summed over our connections (one per participant in a mesh, `up` when forwarded). */
export interface OutboundStats {
  connections: number;
  audio: { bitrateKbps: number | null; codec: string | null } | null;
  video: OutboundVideo | null;
  sample: Sample;
}

/** One overlay line: `field` keys it (`data-field`), `text` is what the user reads. */
export interface StatsRow {
  field: string;
  label: string;
  text: string;
}

interface CodecStats extends RTCStats {
  mimeType: string;
}

interface CandidateStats extends RTCStats {
  candidateType?: string;
  protocol?: string;
}

/** Inbound RTP fields this module reads (outbound has the same shape under other names). */
interface RtpEntry {
  kind: 'audio' | 'video';
  timestamp: number;
  bytes: number;
  packets: number;
  lost: number;
  frames: number;
  fps: number | null;
  jitterMs: number | null;
  width: number | null;
  height: number | null;
  codec: string | null;
}

/**
 * What we receive from one participant. `reports` must not overlap: one per
 * receiver carrying their media (`room.receivers(id)`), or their connection's.
 * `videoOn`: their camera is on, so a low frame rate counts against quality.
 */
export function inboundStats(reports: readonly StatsReport[], previous: Sample | null, videoOn: boolean): InboundStats {
  const entries = rtpEntries(reports, 'inbound-rtp');
  const sample = sampleOf(entries);
  const audio = entries.filter((e) => e.kind === 'audio');
  const video = entries.filter((e) => e.kind === 'video');
  const path = candidatePath(reports);
  const stats: InboundStats = {
    path,
    audio: audio.length ? inboundMedia(audio, sample, previous, 'audio') : null,
    video: video.length
      ? {
          ...inboundMedia(video, sample, previous, 'video'),
          ...size(video),
          fps: frameRate(video, sample, previous, 'video'),
        }
      : null,
    quality: null,
    sample,
  };
  stats.quality = judge(stats, videoOn);
  return stats;
}

/** What we send: `reports` one per connection carrying our media. */
export function outboundStats(reports: readonly StatsReport[], previous: Sample | null): OutboundStats {
  const entries = rtpEntries(reports, 'outbound-rtp');
  const sample = sampleOf(entries);
  const audio = entries.filter((e) => e.kind === 'audio');
  const video = entries.filter((e) => e.kind === 'video');
  return {
    connections: reports.length,
    audio: audio.length
      ? { bitrateKbps: bitrate(sample, previous, 'audio'), codec: audio[0]?.codec ?? null }
      : null,
    video: video.length
      ? {
          bitrateKbps: bitrate(sample, previous, 'video'),
          ...size(video),
          fps: frameRate(video, sample, previous, 'video'),
          codec: video[0]?.codec ?? null,
        }
      : null,
    sample,
  };
}

/** The worst level any measured metric reaches; null when none was measured. */
export function judge(stats: Pick<InboundStats, 'path' | 'audio' | 'video'>, videoOn: boolean): Quality | null {
  const levels: Quality[] = [];
  const above = (value: number | null | undefined, limits: { fair: number; poor: number }): void => {
    if (value === null || value === undefined) return;
    levels.push(value > limits.poor ? 'poor' : value > limits.fair ? 'fair' : 'good');
  };
  const below = (value: number | null | undefined, limits: { fair: number; poor: number }): void => {
    if (value === null || value === undefined) return;
    levels.push(value < limits.poor ? 'poor' : value < limits.fair ? 'fair' : 'good');
  };
  above(stats.path.rttMs, THRESHOLDS.rttMs);
  above(stats.audio?.lossPercent, THRESHOLDS.lossPercent);
  above(stats.video?.lossPercent, THRESHOLDS.lossPercent);
  above(stats.audio?.jitterMs, THRESHOLDS.jitterMs);
  if (videoOn) below(stats.video?.fps, THRESHOLDS.fps);
  if (levels.includes('poor')) return 'poor';
  if (levels.includes('fair')) return 'fair';
  return levels.length ? 'good' : null;
}

/** The overlay's lines for a remote participant. */
export function inboundRows(stats: InboundStats): StatsRow[] {
  const rows: StatsRow[] = [
    { field: 'quality', label: 'Quality', text: stats.quality ?? '–' },
    { field: 'rtt', label: 'RTT', text: ms(stats.path.rttMs) },
    { field: 'candidates', label: 'Path', text: pathText(stats.path) },
  ];
  const { video, audio } = stats;
  if (video) {
    rows.push(
      { field: 'video.bitrate', label: 'Video', text: unit(video.bitrateKbps, 'kbps') },
      { field: 'video.resolution', label: 'Size', text: resolution(video) },
      { field: 'video.fps', label: 'FPS', text: unit(video.fps, 'fps') },
      { field: 'video.loss', label: 'Video loss', text: unit(video.lossPercent, '%', 1) },
      { field: 'video.jitter', label: 'Video jitter', text: ms(video.jitterMs) },
      { field: 'video.codec', label: 'Video codec', text: video.codec ?? '–' },
    );
  }
  if (audio) {
    rows.push(
      { field: 'audio.bitrate', label: 'Audio', text: unit(audio.bitrateKbps, 'kbps') },
      { field: 'audio.loss', label: 'Audio loss', text: unit(audio.lossPercent, '%', 1) },
      { field: 'audio.jitter', label: 'Audio jitter', text: ms(audio.jitterMs) },
      { field: 'audio.codec', label: 'Audio codec', text: audio.codec ?? '–' },
    );
  }
  return rows;
}

/** The overlay's lines for our own tile. */
export function outboundRows(stats: OutboundStats): StatsRow[] {
  const rows: StatsRow[] = [{ field: 'connections', label: 'Sending to', text: `${stats.connections} conn.` }];
  const { video, audio } = stats;
  if (video) {
    rows.push(
      { field: 'video.bitrate', label: 'Video out', text: unit(video.bitrateKbps, 'kbps') },
      { field: 'video.resolution', label: 'Size', text: resolution(video) },
      { field: 'video.fps', label: 'FPS', text: unit(video.fps, 'fps') },
      { field: 'video.codec', label: 'Video codec', text: video.codec ?? '–' },
    );
  }
  if (audio) {
    rows.push(
      { field: 'audio.bitrate', label: 'Audio out', text: unit(audio.bitrateKbps, 'kbps') },
      { field: 'audio.codec', label: 'Audio codec', text: audio.codec ?? '–' },
    );
  }
  return rows;
}

// ---- reading reports ----

function rtpEntries(reports: readonly StatsReport[], type: 'inbound-rtp' | 'outbound-rtp'): RtpEntry[] {
  const out: RtpEntry[] = [];
  for (const report of reports) {
    report.forEach((entry) => {
      if (entry.type !== type) return;
      const rtp = entry as RTCInboundRtpStreamStats & RTCOutboundRtpStreamStats;
      if (rtp.kind !== 'audio' && rtp.kind !== 'video') return;
      const codec = rtp.codecId ? (report.get(rtp.codecId) as CodecStats | undefined) : undefined;
      out.push({
        kind: rtp.kind,
        timestamp: rtp.timestamp,
        bytes: (type === 'inbound-rtp' ? rtp.bytesReceived : rtp.bytesSent) ?? 0,
        packets: (type === 'inbound-rtp' ? rtp.packetsReceived : rtp.packetsSent) ?? 0,
        lost: Math.max(0, rtp.packetsLost ?? 0),
        frames: (type === 'inbound-rtp' ? rtp.framesDecoded : rtp.framesEncoded) ?? 0,
        fps: rtp.framesPerSecond ?? null,
        jitterMs: rtp.jitter === undefined ? null : rtp.jitter * 1000,
        width: rtp.frameWidth ?? null,
        height: rtp.frameHeight ?? null,
        codec: codec?.mimeType.split('/')[1] ?? null,
      });
    });
  }
  return out;
}

function sampleOf(entries: readonly RtpEntry[]): Sample {
  const sum = (kind: RtpEntry['kind']): Counters => {
    const counters: Counters = { bytes: 0, packets: 0, lost: 0, frames: 0 };
    for (const e of entries) {
      if (e.kind !== kind) continue;
      counters.bytes += e.bytes;
      counters.packets += e.packets;
      counters.lost += e.lost;
      counters.frames += e.frames;
    }
    return counters;
  };
  return { at: Math.max(0, ...entries.map((e) => e.timestamp)), audio: sum('audio'), video: sum('video') };
}

/**
 * The selected candidate pair: the transport's `selectedCandidatePairId`, else
 * (browsers without transport stats) a nominated pair that succeeded.
 */
function candidatePath(reports: readonly StatsReport[]): CandidatePath {
  for (const report of reports) {
    let pair: RTCIceCandidatePairStats | undefined;
    report.forEach((entry) => {
      const id = entry.type === 'transport' ? (entry as RTCTransportStats).selectedCandidatePairId : undefined;
      if (id && !pair) pair = report.get(id) as RTCIceCandidatePairStats | undefined;
    });
    report.forEach((entry) => {
      const candidate = entry as RTCIceCandidatePairStats;
      if (!pair && entry.type === 'candidate-pair' && candidate.nominated && candidate.state === 'succeeded') {
        pair = candidate;
      }
    });
    if (!pair) continue;
    const local = report.get(pair.localCandidateId) as CandidateStats | undefined;
    const remote = report.get(pair.remoteCandidateId) as CandidateStats | undefined;
    return {
      rttMs: pair.currentRoundTripTime === undefined ? null : pair.currentRoundTripTime * 1000,
      local: local?.candidateType ?? null,
      remote: remote?.candidateType ?? null,
      protocol: local?.protocol ?? null,
    };
  }
  return { rttMs: null, local: null, remote: null, protocol: null };
}

// ---- rates ----

/** Seconds since `previous`, or null when there is nothing to compare with (or a counter went back). */
function interval(sample: Sample, previous: Sample | null, kind: RtpEntry['kind']): number | null {
  // `at` 0: the previous report had no RTP stream at all (no receivers yet).
  if (!previous || previous.at === 0) return null;
  const now = sample[kind];
  const then = previous[kind];
  if (now.bytes < then.bytes || now.packets < then.packets || now.frames < then.frames) return null;
  const seconds = (sample.at - previous.at) / 1000;
  return seconds > 0 ? seconds : null;
}

function bitrate(sample: Sample, previous: Sample | null, kind: RtpEntry['kind']): number | null {
  const seconds = interval(sample, previous, kind);
  if (seconds === null || !previous) return null;
  return ((sample[kind].bytes - previous[kind].bytes) * 8) / 1000 / seconds;
}

function frameRate(
  entries: readonly RtpEntry[],
  sample: Sample,
  previous: Sample | null,
  kind: RtpEntry['kind'],
): number | null {
  const seconds = interval(sample, previous, kind);
  if (seconds === null || !previous) return entries.find((e) => e.fps !== null)?.fps ?? null;
  return (sample[kind].frames - previous[kind].frames) / seconds;
}

function inboundMedia(
  entries: readonly RtpEntry[],
  sample: Sample,
  previous: Sample | null,
  kind: RtpEntry['kind'],
): InboundMedia {
  let lossPercent: number | null = null;
  if (interval(sample, previous, kind) !== null && previous) {
    const received = sample[kind].packets - previous[kind].packets;
    const lost = Math.max(0, sample[kind].lost - previous[kind].lost);
    lossPercent = received + lost > 0 ? (100 * lost) / (received + lost) : null;
  }
  const jitters = entries.map((e) => e.jitterMs).filter((j): j is number => j !== null);
  return {
    bitrateKbps: bitrate(sample, previous, kind),
    lossPercent,
    jitterMs: jitters.length ? Math.max(...jitters) : null,
    codec: entries[0]?.codec ?? null,
  };
}

/** The largest stream's frame size (a mesh sends one encoding per connection). */
function size(entries: readonly RtpEntry[]): { width: number | null; height: number | null } {
  let best: RtpEntry | null = null;
  for (const e of entries) if (e.width && (!best || e.width > (best.width ?? 0))) best = e;
  return { width: best?.width ?? null, height: best?.height ?? null };
}

// ---- text ----

function unit(value: number | null, suffix: string, digits = 0): string {
  if (value === null || !Number.isFinite(value)) return '–';
  return `${value.toFixed(digits)} ${suffix}`;
}

/** Milliseconds; a decimal below 10 (a LAN's round trip and jitter are a few ms). */
function ms(value: number | null): string {
  return unit(value, 'ms', value !== null && value < 10 ? 1 : 0);
}

function resolution(video: { width: number | null; height: number | null }): string {
  return video.width && video.height ? `${video.width}×${video.height}` : '–';
}

function pathText(path: CandidatePath): string {
  if (!path.local && !path.remote) return '–';
  const types = `${path.local ?? '?'} ↔ ${path.remote ?? '?'}`;
  return path.protocol ? `${types} (${path.protocol})` : types;
}
