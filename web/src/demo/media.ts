export interface LocalMedia {
  stream: MediaStream | null;
  /** Why some media is missing, for the user. */
  warning: string | null;
}

/**
 * Open camera and microphone, falling back to whichever of them works, and to
 * receive-only when neither does (no device, denied, or not a secure context).
 */
export interface MediaWanted {
  audio: boolean;
  video: boolean;
  /** Ideal camera size and frame rate; default 640×480 at the camera's rate. */
  width?: number | null;
  height?: number | null;
  fps?: number | null;
}

export async function openLocalMedia(want: MediaWanted): Promise<LocalMedia> {
  if (!want.audio && !want.video) return { stream: null, warning: null };
  const devices = navigator.mediaDevices as MediaDevices | undefined;
  if (!devices?.getUserMedia) {
    return {
      stream: null,
      warning: 'Camera and microphone need https or localhost; joining receive-only.',
    };
  }
  const video: MediaTrackConstraints = { width: { ideal: want.width ?? 640 }, height: { ideal: want.height ?? 480 } };
  if (want.fps) video.frameRate = { ideal: want.fps };
  const attempts: MediaStreamConstraints[] = [];
  if (want.audio && want.video) attempts.push({ audio: true, video });
  if (want.audio) attempts.push({ audio: true });
  if (want.video) attempts.push({ video });
  let lastError: unknown = null;
  for (const constraints of attempts) {
    try {
      const stream = await devices.getUserMedia(constraints);
      const missing =
        (want.audio && stream.getAudioTracks().length === 0 ? ['microphone'] : []).concat(
          want.video && stream.getVideoTracks().length === 0 ? ['camera'] : [],
        );
      return {
        stream,
        warning: missing.length ? `No ${missing.join(' or ')} available: ${describe(lastError)}` : null,
      };
    } catch (err) {
      lastError = err;
    }
  }
  return { stream: null, warning: `No camera or microphone: ${describe(lastError)}; joining receive-only.` };
}

export async function openScreen(): Promise<MediaStreamTrack | null> {
  const devices = navigator.mediaDevices as MediaDevices | undefined;
  if (!devices?.getDisplayMedia) return null;
  const stream = await devices.getDisplayMedia({ video: true, audio: false });
  return stream.getVideoTracks()[0] ?? null;
}

export function stopStream(stream: MediaStream | null): void {
  for (const track of stream?.getTracks() ?? []) track.stop();
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}
