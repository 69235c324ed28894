"""A labelled, synthetic corpus for answering-machine detection, built reproducibly.

Nothing is downloaded: every clip is made here from the TTS voices ringcast
already ships (eSpeak NG with several voice variants in six languages, and the
piper voice of the `piper` extra when it is installed), then put through what a
phone line does: leading silence, a level between -30 and -12 dBFS, a
300-3,400 Hz band-pass, noise (white, pink or hum) at 10-30 dB SNR, and G.711
µ-law encoding. Labels are known by construction:

- human: a short answer ("Hello?", "Yes?", "Hi, this is Dana", answers in
  German, French, Spanish, Italian and Portuguese), sometimes repeated after a
  pause ("Hello? ... hello?"), then silence;
- machine: a personal greeting, a carrier message or a business IVR, spoken
  sentence by sentence with pauses, then (70 %) a beep of 400-2,000 Hz lasting
  150-1,000 ms, whose end is recorded as `beep_end_ms`;
- fax: CNG (1,100 Hz, 0.5 s on, 3 s off) or CED (2,100 Hz, 3 s).

Every clip's parameters come from one seeded generator, so a build is the same
every time. `split(clip)` puts each clip in the tuning or the held-out half by
its number. This is synthetic speech, not recordings of real calls: the
README and bench/RESULTS.md say so next to every figure measured on it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from ringcast.media import tts
from ringcast.media.codecs import float_to_pcm16, get_codec

RATE = 8000
SEED = 16
VERSION = 1  # bump when the recipe changes: the cache key includes it
CACHE = Path(os.environ.get("RINGCAST_AMD_CORPUS", Path.home() / ".cache" / "ringcast-amd"))

HUMAN = {
    "en-us": [
        "Hello?",
        "Yes?",
        "Hi, this is Dana.",
        "Hello, who is this?",
        "Yeah?",
        "Speaking.",
        "Good morning.",
        "Hello, Mark speaking.",
        "Hi there.",
        "Yes, hello?",
    ],
    "de": ["Hallo?", "Ja, bitte?", "Müller.", "Guten Tag, hier ist Anna.", "Ja?"],
    "fr": ["Allô?", "Oui?", "Bonjour, c'est Marie.", "Allô, oui?"],
    "es": ["¿Diga?", "¿Sí?", "Hola, soy Carlos.", "¿Bueno?"],
    "it": ["Pronto?", "Sì?", "Ciao, sono Luca.", "Pronto, chi parla?"],
    "pt": ["Alô?", "Sim?", "Olá, aqui é a Ana.", "Estou?"],
}
MACHINE = {
    "en-us": [
        "Hi, you've reached Dana. I can't come to the phone right now. "
        "Please leave a message after the tone.",
        "The person you are calling is not available. Please leave a message after the beep.",
        "Thank you for calling Acme Corporation. Our office is currently closed. "
        "Our business hours are Monday through Friday, nine to five.",
        "Hello, this is Mark. Leave a message.",
        "The number you have dialed is not available. At the tone, please record your message. "
        "When you have finished recording, you may hang up.",
        "Hey, it's Sam. Sorry I missed you. Leave your name and number and I'll call you back.",
        "You have reached the voice mailbox of extension two one four. Please leave a message.",
        "Welcome to First Street Dental. For appointments, press one. For billing, press two.",
    ],
    "de": [
        "Hallo, hier ist der Anrufbeantworter von Anna Müller. "
        "Bitte hinterlassen Sie eine Nachricht nach dem Signalton.",
        "Der gewünschte Gesprächspartner ist zur Zeit nicht erreichbar.",
        "Willkommen bei der Firma Schmidt. Unser Büro ist zur Zeit nicht besetzt.",
    ],
    "fr": [
        "Bonjour, vous êtes bien chez Marie. Je ne suis pas disponible. "
        "Laissez-moi un message après le bip.",
        "Votre correspondant n'est pas joignable pour le moment. Merci de rappeler plus tard.",
    ],
    "es": [
        "Hola, has llamado a Carlos. No puedo atenderte ahora. "
        "Deja tu mensaje después de la señal.",
        "El número marcado no está disponible en este momento. Por favor, inténtelo más tarde.",
    ],
    "it": [
        "Ciao, sono Luca. Al momento non posso rispondere. Lascia un messaggio dopo il segnale.",
        "Il cliente da lei chiamato non è al momento raggiungibile.",
    ],
    "pt": [
        "Olá, você ligou para a Ana. Não posso atender agora. Deixe sua mensagem após o sinal.",
        "O número que você ligou não está disponível no momento.",
    ],
}
VARIANTS = ["", "+f2", "+f3", "+m3", "+m7", "+klatt", "+f5", "+m2"]
BEEP_HZ = [400, 440, 500, 600, 800, 850, 950, 1000, 1250, 1400, 1600, 1800, 2000]
COUNTS = {"human": 150, "machine": 170, "fax": 20}
CLIP_SECONDS = 20.0  # long enough for the longest greeting and its beep


@dataclass(frozen=True)
class Clip:
    n: int
    label: str  # human, machine, fax
    voice: str
    text: str
    beep_end_ms: float | None  # machines with a beep: where the voicemail may start
    greeting_end_ms: float | None  # machines: end of the last word
    pcm: npt.NDArray[np.int16]  # 8 kHz, after G.711 µ-law

    @property
    def half(self) -> str:
        return "tune" if self.n % 2 == 0 else "test"


def _speech(text: str, voice: str, rate: int) -> npt.NDArray[np.float64]:
    s = tts.synthesize(text, voice=voice, rate=rate)
    x = np.asarray(s.samples, dtype=np.float64)
    if s.sample_rate != RATE:
        x = np.asarray(soxr.resample(x, s.sample_rate, RATE), dtype=np.float64)
    nz = np.flatnonzero(np.abs(x) > 1e-3)
    return x[nz[0] : nz[-1] + 1] if len(nz) else x


def _rms(x: npt.NDArray[np.float64]) -> float:
    active = x[np.abs(x) > 1e-3]
    return float(np.sqrt(np.mean(active**2))) if len(active) else 1e-6


def _bandpass(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The telephone band, 300-3,400 Hz, with gentle FFT-domain slopes."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    gain = np.clip((f - 200) / 100, 0, 1) * np.clip((3500 - f) / 100, 0, 1)
    return np.fft.irfft(spec * gain, len(x))


def _noise(rng: np.random.Generator, n: int, kind: str) -> npt.NDArray[np.float64]:
    if kind == "white":
        w = rng.standard_normal(n)
    elif kind == "pink":
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / RATE)
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0
        w = np.fft.irfft(spec, n)
    else:  # hum: 50/60 Hz harmonics plus a little hiss
        t = np.arange(n) / RATE
        base = rng.choice([50.0, 60.0])
        w = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in (3, 5, 7))
        w = np.asarray(w) + 0.3 * rng.standard_normal(n)
    return w / (np.sqrt(np.mean(w**2)) + 1e-12)


def _tone(hz: float, seconds: float, amp: float) -> npt.NDArray[np.float64]:
    t = np.arange(int(seconds * RATE)) / RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)  # 5 ms edges
    return amp * np.sin(2 * np.pi * hz * t) * ramp


def _voice(rng: np.random.Generator, lang: str) -> str:
    if lang == "en-us" and tts.PiperEngine.available() and rng.random() < 0.3:
        return "piper"
    return lang + str(rng.choice(VARIANTS))


def _make(n: int, label: str, rng: np.random.Generator) -> Clip:
    total = np.zeros(int(CLIP_SECONDS * RATE))
    pos = int(rng.uniform(0.1, 1.2 if label == "human" else 2.0) * RATE)
    beep_end = greeting_end = None
    text = ""
    voice = ""
    rate = int(rng.integers(140, 200))
    level = 10 ** (rng.uniform(-30, -12) / 20)
    if label == "human":
        lang = str(rng.choice(list(HUMAN), p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]))
        voice = _voice(rng, lang)
        text = str(rng.choice(HUMAN[lang]))
        x = _speech(text, voice, rate)
        x *= level / _rms(x)
        total[pos : pos + len(x)] += x
        if rng.random() < 0.35:  # "Hello? ... hello?"
            again = pos + len(x) + int(rng.uniform(1.2, 2.5) * RATE)
            total[again : again + len(x)] += x
    elif label == "machine":
        lang = str(rng.choice(list(MACHINE), p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]))
        voice = _voice(rng, lang)
        text = str(rng.choice(MACHINE[lang]))
        for sentence in [s for s in text.replace("? ", ". ").split(". ") if s]:
            x = _speech(sentence, voice, rate)
            x *= level / _rms(x)
            if pos + len(x) > len(total) - 3 * RATE:
                break
            total[pos : pos + len(x)] += x
            pos += len(x) + int(rng.uniform(0.15, 0.6) * RATE)
        greeting_end = pos * 1000 / RATE
        if rng.random() < 0.7:
            pos += int(rng.uniform(0.1, 0.8) * RATE)
            beep = _tone(
                float(rng.choice(BEEP_HZ)), rng.uniform(0.15, 1.0), level * rng.uniform(1, 3)
            )
            total[pos : pos + len(beep)] += beep
            beep_end = (pos + len(beep)) * 1000 / RATE
    else:
        kind = "cng" if rng.random() < 0.5 else "ced"
        text = kind
        amp = level * 1.5
        if kind == "cng":
            while pos < len(total) - RATE:
                b = _tone(1100.0, 0.5, amp)
                total[pos : pos + len(b)] += b
                pos += int(3.5 * RATE)
        else:
            b = _tone(2100.0, 3.0, amp)
            total[pos : pos + len(b)] += b
    noise = _noise(rng, len(total), str(rng.choice(["white", "pink", "hum"])))
    snr = rng.uniform(10, 30)
    total = _bandpass(total) + noise * level / 10 ** (snr / 20)
    codec = get_codec("PCMU")
    pcm = codec.decode(codec.encode(float_to_pcm16(total.astype(np.float32))))
    return Clip(n, label, voice, text, beep_end, greeting_end, pcm)


def build() -> list[Clip]:
    """Every clip, from the cache when the recipe and voices are unchanged."""
    key = hashlib.sha256(
        f"{VERSION}-{SEED}-{COUNTS}-{tts.PiperEngine.available()}".encode()
    ).hexdigest()[:12]
    path = CACHE / f"corpus-{key}.npz"
    if path.exists():
        return load(path)
    rng = np.random.default_rng(SEED)
    labels = [lab for lab, k in COUNTS.items() for _ in range(k)]
    order = rng.permutation(len(labels))
    clips = [_make(i, labels[j], rng) for i, j in enumerate(order)]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        pcm=np.stack([c.pcm for c in clips]),
        meta=np.array(
            [
                [c.label, c.voice, c.text, repr(c.beep_end_ms), repr(c.greeting_end_ms)]
                for c in clips
            ]
        ),
    )
    tmp.rename(path)
    return clips


def load(path: Path) -> list[Clip]:
    data = np.load(path)
    out = []
    for i, (pcm, meta) in enumerate(zip(data["pcm"], data["meta"], strict=True)):
        label, voice, text, beep, greet = (str(m) for m in meta)
        out.append(
            Clip(
                i,
                label,
                voice,
                text,
                None if beep == "None" else float(beep),
                None if greet == "None" else float(greet),
                pcm,
            )
        )
    return out


def one(label: str, n: int = 0) -> Clip:
    """A single clip without building the whole corpus (for tests)."""
    return _make(
        n, label, np.random.default_rng([SEED, n, ["human", "machine", "fax"].index(label)])
    )
