"""Speech sources for the synthetic corpus: audio format, phone/word timings checked against the
waveform's own energy, phone-set coverage over the 500 LRW words, alignment, augmentation."""

import shutil

import numpy as np
import pytest

from talkface.data import speech
from talkface.data.lrw import lrw_vocabulary
from talkface.data.speech import ARPABET, Espeak, Utterance

WORDS = [w.lower() for w in lrw_vocabulary()]
VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}

needs_flite = pytest.mark.skipif(not speech.available_sources().get("flite"),
                                 reason="Debian package flite is not installed")
needs_festival = pytest.mark.skipif(shutil.which("festival") is None or not speech._festival_voices(),
                                    reason="Debian packages festival + festvox-kallpc16k are not installed")
needs_asterisk = pytest.mark.skipif(not speech._ASTERISK_TRANSCRIPTS.exists(),
                                    reason="Debian packages asterisk-core-sounds-en(-wav) are not installed")


def energy_db(waveform: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Level in dB of a 5 ms window around every millisecond."""
    win, hop = sr // 200, sr // 1000
    power = np.convolve(waveform.astype(np.float64) ** 2, np.ones(win) / win, mode="same")[::hop]
    return 10 * np.log10(power + 1e-12)


def check_timings(utt: Utterance, word: str | None = None) -> None:
    """16 kHz float32; phones tile [0, duration] in order; words are in order over their phones."""
    assert utt.sample_rate == 16000
    assert utt.waveform.dtype == np.float32 and utt.waveform.ndim == 1
    assert 0.2 < utt.duration < 10 and np.abs(utt.waveform).max() > 0.01
    assert utt.phones[0].start == 0 and utt.phones[-1].end == pytest.approx(utt.duration, abs=1e-9)
    for a, b in zip(utt.phones, utt.phones[1:]):
        assert a.end == pytest.approx(b.start, abs=1e-9)
    assert all(p.end > p.start and p.symbol in ARPABET for p in utt.phones)
    for a, b in zip(utt.words, utt.words[1:]):
        assert a.end <= b.start + 1e-9
    for w in utt.words:
        inside = [p for p in utt.phones if p.start >= w.start - 1e-6 and p.end <= w.end + 1e-6]
        assert inside and inside[0].start == pytest.approx(w.start, abs=1e-6)
        assert inside[-1].end == pytest.approx(w.end, abs=1e-6)
        assert all(p.symbol != "sil" for p in inside), w
    if word is not None:
        texts = [w.text for w in utt.words]
        assert texts.count(word) == 1, texts
        span = utt.words[texts.index(word)]
        assert 0.1 < span.start and span.end < utt.duration - 0.1 and span.end - span.start > 0.1


@pytest.fixture(scope="module")
def espeak() -> Espeak:
    return Espeak()


# phone set

def test_phone_set_and_tables():
    assert len(ARPABET) == 40 == len(set(ARPABET)) and "sil" in ARPABET
    for source, table in speech._TABLES.items():
        for symbol in table:
            assert set(speech.to_arpabet(symbol, source)) <= set(ARPABET), (source, symbol)
    assert speech.to_arpabet("'aI@", "espeak") == ("AY", "ER")
    assert speech.to_arpabet("axr", "festival") == ("ER",)


def test_unknown_symbol_is_guessed_and_counted():
    before = speech.UNKNOWN_SYMBOLS["espeak", "tS#9"]
    assert speech.to_arpabet("tS#9", "espeak") == ("CH",)
    assert speech.UNKNOWN_SYMBOLS["espeak", "tS#9"] == before + 1
    del speech.UNKNOWN_SYMBOLS["espeak", "tS#9"]


# eSpeak NG

@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp+m3", "en-gb-scotland+f2", "en-029+klatt2"])
def test_espeak_carrier_phrase(espeak, voice):
    utt = espeak.synthesize("the next word is ABOUT again", voice=voice, rate=160, pitch=40)
    check_timings(utt, "about")
    assert (utt.source, utt.voice) == ("espeak", voice)
    about = next(w for w in utt.words if w.text == "about")
    symbols = [p.symbol for p in utt.phones if about.start <= p.start < about.end]
    assert symbols[-3:] == ["B", "AW", "T"]


def test_espeak_every_lrw_word_maps_without_guessing(espeak):
    # Every word in American English; every third in the accents with their own phonemes.
    speech.UNKNOWN_SYMBOLS.clear()
    for voice, words in [("en-us", WORDS), ("en-gb-x-rp", WORDS[::3]), ("en-gb-scotland", WORDS[1::3]),
                         ("en-029", WORDS[2::3])]:
        for word in words:
            utt = espeak.synthesize(f"the next word is {word} now", voice=voice)
            assert word in [w.text for w in utt.words], (voice, word)
    assert not speech.UNKNOWN_SYMBOLS


def test_espeak_onsets_match_the_energy(espeak):
    # After the leading silence, the first phone starts where the sound does.
    for word in ["apple", "many", "sometimes", "only"]:
        utt = espeak.synthesize(word)
        level = energy_db(utt.waveform)
        onset_ms = np.argmax(level > level.max() - 40)
        first = next(p for p in utt.phones if p.symbol != "sil")
        assert abs(first.start * 1000 - onset_ms) <= 5, word


@pytest.mark.parametrize("voice", ["en-us", "en-us+f2", "en-gb-scotland+m2"])
def test_espeak_stops_own_their_silent_closure(espeak, voice):
    # eSpeak reports /p/ at its release; the closure silence before it must belong to the /p/
    # (the lips are shut then), also with variants whose echo fills the silence.
    utt = espeak.synthesize("a happy paper, a cheap top", voice=voice)
    level = energy_db(utt.waveform)
    stops = [(a, p) for a, p in zip(utt.phones, utt.phones[1:]) if p.symbol in ("P", "T", "CH") and a.symbol in VOWELS]
    assert len(stops) >= 4
    for vowel, stop in stops:
        ms = int(stop.start * 1000)
        closure = np.median(level[ms + 3 : ms + 3 + int((stop.end - stop.start) * 400)])
        before = np.median(level[int(vowel.start * 1000) : ms - 3])
        assert closure < before - 15, (stop, closure, before)


def test_espeak_voices_all_load(espeak):
    voices = espeak.voices()
    assert {"en-us", "en", "en-gb-scotland", "en-029", "en-us+m3", "en-gb-x-rp+f2"} <= set(voices)
    assert len(voices) > 500
    for voice in voices[::37]:
        check_timings(espeak.synthesize("hello there", voice=voice))
    with pytest.raises(ValueError, match="unknown eSpeak voice"):
        espeak.synthesize("hello", voice="xx-nonexistent")


def test_espeak_words_keep_apostrophes_and_sentences_add_up(espeak):
    utt = espeak.synthesize("One. Don't stop, it's fine.")
    check_timings(utt)
    assert [w.text for w in utt.words] == ["one", "don't", "stop", "it's", "fine"]


# Flite and Festival

@needs_flite
@pytest.mark.parametrize("voice", ["kal16", "slt"])
def test_flite_carrier_phrase(voice):
    utt = speech.flite_synthesize("the next word is ABOUT again", voice)
    check_timings(utt, "about")
    assert utt.source == "flite"
    assert [p.symbol for p in utt.phones if p.symbol != "sil"][:2] == ["DH", "AH"]


@needs_festival
def test_festival_batch():
    voice = "kal_diphone" if "kal_diphone" in speech._festival_voices() else speech._festival_voices()[0]
    utts = speech.festival_synthesize_many(["the next word is ABOUT again", 'he said "money" twice'], voice)
    check_timings(utts[0], "about")
    check_timings(utts[1], "money")
    assert utts[1].text == 'he said "money" twice' and utts[1].source == "festival"


# pocketsphinx alignment and Asterisk prompts

def test_align_recovers_espeak_word_times(espeak):
    # eSpeak's timings are exact, so they grade the aligner (here through noise and a lead-in).
    utt = espeak.synthesize("the next word is government again", voice="en-us+m3")
    rng = np.random.default_rng(0)
    noisy = np.concatenate([np.zeros(1600, np.float32), utt.waveform])
    noisy += rng.normal(0, 0.003, len(noisy)).astype(np.float32)
    phones, words = speech.align(noisy, 16000, utt.text)
    assert [w.text for w in words] == [w.text for w in utt.words]
    errors = [abs(a.start - 0.1 - b.start) for a, b in zip(words[1:], utt.words[1:])]
    errors += [abs(a.end - 0.1 - b.end) for a, b in zip(words, utt.words)]
    assert np.median(errors) < 0.025 and max(errors) < 0.08
    assert phones[0].symbol == "sil" and phones[0].end > 0.05


@needs_asterisk
def test_asterisk_prompt_alignment():
    prompts = dict((p.stem, (p, t)) for p, t in speech.asterisk_prompts())
    assert len(prompts) > 300
    path, text = prompts["agent-pass"]
    assert text == "please enter your password followed by the pound key"
    utt = speech.asterisk_utterance(path, text)
    check_timings(utt)
    assert [w.text for w in utt.words] == text.split()
    assert all(0.04 < w.end - w.start < 1.0 for w in utt.words)
    level = energy_db(utt.waveform)
    loud = np.nonzero(level > level.max() - 35)[0]
    assert abs(utt.words[0].start * 1000 - loud[0]) < 60
    assert abs(utt.words[-1].end * 1000 - loud[-1]) < 150


def test_normalize_transcript():
    assert speech.normalize_transcript("Press 1, then # [beep] (pause)") == "press one then pound"
    assert speech.normalize_transcript("Call-Forward 25 times!") == "call forward twenty five times"


# augmentation

def test_change_tempo_moves_the_closures_with_the_timings(espeak):
    utt = espeak.synthesize("a happy paper, a cheap top")
    fast = speech.change_tempo(utt, 1.25)
    check_timings(fast)
    assert fast.duration == pytest.approx(utt.duration / 1.25, rel=0.01)
    level = energy_db(fast.waveform)
    stops = [(a, p) for a, p in zip(fast.phones, fast.phones[1:]) if p.symbol in ("P", "T") and a.symbol in VOWELS]
    assert len(stops) >= 4
    for vowel, stop in stops:
        ms, span = int(stop.start * 1000), int((stop.end - stop.start) * 1000)
        closure = np.median(level[ms + 2 : ms + 2 + int(0.4 * span)])
        middle = np.median(level[int(vowel.start * 1000) + 10 : int(vowel.end * 1000) - 10])
        assert closure < middle - 15, (stop, closure, middle)


def test_augment_keeps_timings_consistent(espeak):
    utt = espeak.synthesize("the next word is ABOUT again")
    rng = np.random.default_rng(1)
    lengths = set()
    for _ in range(8):
        aug = speech.augment(utt, rng)
        check_timings(aug, "about")
        assert np.isfinite(aug.waveform).all() and np.abs(aug.waveform).max() <= 1.0
        scale = aug.duration / utt.duration
        for a, b in zip(aug.words, utt.words):
            assert a.start == pytest.approx(b.start * scale, abs=1e-6)
        lengths.add(len(aug.waveform))
    assert len(lengths) > 1  # some draws changed the tempo
    same = speech.augment(utt, rng, strength=0)
    assert np.array_equal(same.waveform, utt.waveform)
