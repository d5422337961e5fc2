export interface SpeakingOptions {
  /** RMS level (0..1) above which the stream counts as speech; default 0.02. */
  threshold?: number;
  /** How often the level is read, in ms; default 100. */
  intervalMs?: number;
  /** How long the level must stay low before `speaking` turns false, in ms; default 700. */
  holdMs?: number;
}

/**
 * Watches a local stream's audio level and reports speaking on/off changes,
 * with a hold time so pauses between words do not flap the state (each
 * change is a room event for everyone).
 */
export class SpeakingDetector {
  private readonly context: AudioContext;
  private readonly source: MediaStreamAudioSourceNode;
  private readonly analyser: AnalyserNode;
  private readonly samples: Float32Array<ArrayBuffer>;
  private readonly timer: ReturnType<typeof setInterval>;
  private speaking = false;
  private lastLoud = 0;
  private closed = false;

  constructor(
    stream: MediaStream,
    private readonly onChange: (speaking: boolean) => void,
    options: SpeakingOptions = {},
  ) {
    const threshold = options.threshold ?? 0.02;
    const holdMs = options.holdMs ?? 700;
    this.context = new AudioContext();
    this.source = this.context.createMediaStreamSource(stream);
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    // Autoplay policy may start the context suspended; it resumes on a later gesture too.
    void this.context.resume().catch(() => undefined);
    this.timer = setInterval(() => this.sample(threshold, holdMs), options.intervalMs ?? 100);
  }

  get isSpeaking(): boolean {
    return this.speaking;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.source.disconnect();
    void this.context.close().catch(() => undefined);
  }

  private sample(threshold: number, holdMs: number): void {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const value of this.samples) sum += value * value;
    const rms = Math.sqrt(sum / this.samples.length);
    const now = performance.now();
    if (rms > threshold) this.lastLoud = now;
    const speaking = now - this.lastLoud < holdMs && this.lastLoud > 0;
    if (speaking !== this.speaking) {
      this.speaking = speaking;
      this.onChange(speaking);
    }
  }
}
