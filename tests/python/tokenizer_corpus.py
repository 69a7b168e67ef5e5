"""Deterministic corpus of texts for tokenizer conformance tests (punctum vs Hugging Face
`tokenizers`). `corpus()` returns the same >= 5,000 texts on every call: many scripts, emoji
with ZWJ sequences and skin tones, combining marks, runs of white space, digits, contractions,
punctuation, code, special tokens inside text, the empty string and random mixes.

    python tests/python/tokenizer_corpus.py [N]   # print N texts as JSON lines (default all)
"""

import json
import random
import sys

SEED = 20240611

LATIN = [
    "Hello", "world", "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Create", "a",
    "sign", "with", "message", "on", "it", "that", "describes", "your", "situation", "rabbit",
    "carrot", "hunger", "starving", "He", "saw", "and", "had", "to", "grab", "His", "was", "like",
    "poem", "line", "break", "period", "attention", "token", "model", "sweep", "tokenizer",
    "internationalization", "antidisestablishmentarianism", "naïve", "café", "résumé", "über",
    "Straße", "fiancée", "coöperate", "jalapeño", "São", "Paulo", "Łódź", "Kraków", "Dvořák",
    "façade", "smörgåsbord", "Ærøskøbing", "Ångström", "İstanbul", "ıi", "ǅemal", "ﬁnance", "Ⅻ",
    "élève", "être", "noël", "Zürich", "ÉCOLE", "ÀÉÎÕÜ",
]
CYRILLIC = ["Привет", "мир", "Москва", "ёлка", "съешь", "же", "ещё", "этих", "мягких", "булок", "Україна", "ґанок"]
GREEK = ["Καλημέρα", "κόσμε", "ΑΒΓΔ", "ἄνθρωπος", "ὦ", "ΐ"]
ARABIC = ["مرحبا", "بالعالم", "السلام", "عليكم", "كتاب", "مُحَمَّد", "١٢٣", "٤٥٦٧"]
HEBREW = ["שלום", "עולם", "בְּרֵאשִׁית"]
DEVANAGARI = ["नमस्ते", "दुनिया", "हिन्दी", "क्षत्रिय", "श्री", "०१२३"]
CJK = ["你好", "世界", "中文分词", "我爱北京天安门", "日本語", "こんにちは", "カタカナ", "ひらがな",
       "한국어", "안녕하세요", "漢字", "。", "、", "「引用」", "（括号）", "！", "？", "ｆｕｌｌｗｉｄｔｈ", "１２３"]
THAI = ["สวัสดี", "ภาษาไทย"]
OTHER = ["ᚠᚢᚦᚨᚱᚲ", "ⴰⵣⵓⵍ", "ሰላም", "ꯑꯃ", "𐌰𐌱𐌲", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "ℌℑℜ"]
EMOJI = ["😀", "😂", "🤖", "🎉", "🔥", "👍", "👍🏽", "👍🏿", "👋🏻", "❤️", "❤", "🇫🇷", "🇯🇵", "🏳️‍🌈",
         "👨‍👩‍👧‍👦", "👩🏽‍💻", "🧑‍🚀", "🐈‍⬛", "1️⃣", "#️⃣", "☕", "⚡", "✨", "🫠", "🦀"]
COMBINING = ["e\u0301", "a\u0300\u0301", "o\u0308\u0304", "n\u0303", "u\u031b\u0323", "A\u030a",
             "\u0301", "x\u0336y\u0336", "Z\u0351\u0359\u0329", "\u1100\u1161\u11a8", "\u1100\u1161",
             "\u0915\u094d\u0937", "i\u0307", "\u0041\u0328\u0301", "q\u0307\u0323", "ﬃ", "Å", "Ω",
             "\u212b", "\u2126", "\u00c5\u0327", "s\u0323\u0307", "\u1e9b\u0323"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
                "’s", "'x", "''", "n't", "I'm", "you're", "we've", "they'll", "she'd", "it's", "DON'T",
                "WE'LL", "Y'ALL", "rock'n'roll", "'tis", "o'clock"]
PUNCT = [".", ",", ";", ":", "!", "?", "...", "…", "—", "–", "-", "--", "(", ")", "[", "]", "{", "}",
         "\"", "'", "`", "~", "@", "#", "$", "%", "^", "&", "*", "_", "+", "=", "|", "\\", "/", "<",
         ">", "?!", "!!!", "?..", "«", "»", "„", "“", "”", "‘", "’", "¿", "¡", "§", "¶", "•", "·",
         "©", "®", "™", "°", "±", "×", "÷", "€", "£", "¥", "¢", "₹", "‰"]
WS = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\t\t", " \t ", "\u00a0",
      "\u3000", "\u2009", "\u200b", "\u2028", "\u0085", "\x0b", "\x0c", "          ", "\n\n\n\n"]
CODE = [
    "def f(x):\n    return x + 1\n",
    "for (int i = 0; i < n; i++) { sum += a[i]; }",
    "if __name__ == \"__main__\":\n\tmain()",
    "SELECT * FROM users WHERE id = 42;",
    "<div class=\"a\">Hello</div>",
    "x = [1, 2, 3]\nprint(x[::-1])",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 1); }",
    "fn main() { let v: Vec<u8> = vec![]; }",
    "{\"key\": [1, 2.5e-3, null, true]}",
    "    indented   code\twith\ttabs   ",
    "a==b&&c!=d||e<=f>>2",
    "https://example.com/path?q=1&r=%20#frag",
    "user@example.org",
    "C:\\Users\\name\\file.txt",
    "$ ls -la | grep '^d' > out.txt 2>&1",
]
DIGITS = ["0", "7", "42", "123", "1234", "12345", "123456789", "3.14159", "1,000,000", "2024-06-11",
          "10:45", "+1-555-0100", "0x1F", "1e10", "٣", "१२", "１２", "½", "²", "Ⅳ", "00000", "9999999999999"]


def _pick(rng, xs):
    return xs[rng.randrange(len(xs))]


def _word(rng):
    group = rng.random()
    if group < 0.40:
        w = _pick(rng, LATIN)
        r = rng.random()
        if r < 0.1:
            w = w.upper()
        elif r < 0.2:
            w = w.capitalize()
        return w
    pools = [CYRILLIC, GREEK, ARABIC, HEBREW, DEVANAGARI, CJK, THAI, OTHER, EMOJI, COMBINING,
             CONTRACTIONS, PUNCT, DIGITS]
    return _pick(rng, _pick(rng, pools))


def _sentence(rng, n):
    out = []
    for i in range(n):
        w = _word(rng)
        if i:
            r = rng.random()
            if r < 0.75:
                out.append(" ")
            elif r < 0.85:
                out.append(_pick(rng, WS))
        out.append(w)
    if rng.random() < 0.6:
        out.append(_pick(rng, [".", "!", "?", "...", "。", ",", ";", ":", "\n", " ."]))
    return "".join(out)


def _random_chars(rng, n):
    ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff),
              (0x590, 0x5ff), (0x600, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff),
              (0x2000, 0x206f), (0x2100, 0x214f), (0x2190, 0x21ff), (0x3000, 0x30ff), (0x4e00, 0x4fff),
              (0xac00, 0xacff), (0xff00, 0xffef), (0x1f300, 0x1f64f), (0x1f900, 0x1f9ff), (0x0, 0x1f)]
    s = []
    for _ in range(n):
        lo, hi = _pick(rng, ranges)
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:
            c = 0x41
        s.append(chr(c))
    return "".join(s)


def _any_chars(rng, n):
    """Code points from anywhere in Unicode (recent additions included), with some ASCII."""
    s = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            s.append(_pick(rng, " \t\n'sStTdD0123456789.,!"))
            continue
        c = rng.randint(0x80, 0x323AF) if r < 0.95 else rng.randint(0xE0000, 0x10FFFF)
        if 0xD800 <= c <= 0xDFFF:
            c = 0x41
        s.append(chr(c))
    return "".join(s)


def _fixed():
    """Hand-written texts for known edge cases."""
    t = [
        "", " ", "  ", "\n", "\t", "\r\n", "a", "A", "é", "😀", "👨‍👩‍👧‍👦",
        "Hello world", " Hello world", "Hello world ", "  Hello  world  ",
        "Create a sign with a message on it that describes your situation",
        "Create a sign with a message on it that describes your situation.",
        "He saw a carrot and had to grab it,\nHis hunger was like a starving",
        "I'm sure you're right, we've seen they'll say she'd've known it's OK.",
        "I'M SURE YOU'RE RIGHT, WE'VE SEEN THEY'LL SAY SHE'D KNOWN IT'S OK.",
        "don't DON'T Don'T", "'s's's", "''''", "'", "' '", "'s", "x's", "1's",
        "123", "1234567", "a1b22c333d4444", "3.14 + 2.71 = 5.85", "٣٤٥ १२३ １２３",
        "...", "!!!???", "—", "– —", "a...b", "end.", "end. ", "end.\n", "end .",
        "   leading", "trailing   ", "\n\nparagraph\n\n", "tab\there", "cr\rlf\r\n",
        "multiple\n\n\nnewlines", "mixed \t\n whitespace \r\n\t end",
        "你好，世界。这是一个测试。", "日本語のテキスト、句読点。", "한국어 텍스트입니다.",
        "مرحبا بالعالم", "नमस्ते दुनिया", "Привет, мир!", "Καλημέρα κόσμε",
        "e\u0301 e\u0301e\u0301 \u0301", "a\u0301\u0301b", "\u1100\u1161\u11a8\u1100",
        "ﬁﬂ ﬃ", "Ⅻ ½ ² ℌ", "İstanbul ıi", "ǅ ǈ ǋ", "ΐ ΰ", "\u212b\u2126",
        "👍🏽👍🏿 🏳️‍🌈 🇫🇷🇯🇵 1️⃣", "emoji😀inside", "😀😀😀",
        "<s>", "</s>", "<unk>", "<s> hello", "hello <s>", "hello<s>world", "<s><s>", " <s> ",
        "<|endoftext|>", "text<|endoftext|>more", "<|begin_of_text|>Hi", "<|im_start|>user\nHi<|im_end|>",
        "<|eot_id|><|eot_id|>", "a <|endoftext|> b", "<|endoftext", "endoftext|>",
        "[MASK]", "a [MASK] b", "a[MASK]b", "hello[MASK]", " [MASK] ", "  [MASK]  ",
        "<sep>", "a<sep>b", "a <sep> b", "xyz_tok", "a xyz_tok b", "axyz_tokb", "xyz_tok_", "_xyz_tok",
        "\u00a0nbsp\u00a0", "ideo\u3000space", "zero\u200bwidth", "line\u2028sep", "nel\u0085x",
        "\x0bvt\x0cff", "\x00nul", "\x7fdel", "\ufeffbom", "\ufffd", "\U0010ffff", "\U000e0001",
        "ab" * 200, "a" * 1000, " " * 100, "\n" * 50, "x " * 300, "1" * 300, "😀" * 100,
        "The capital of France is", "The capital of France is Paris.",
    ]
    t += CODE
    return t


def corpus(n=5200):
    rng = random.Random(SEED)
    texts = _fixed()
    kinds = ["sentence", "short", "long", "code", "digits", "ws", "random", "special", "contraction",
             "punct", "emoji", "mix", "anychar"]
    specials = ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>",
                "<|im_start|>", "<|im_end|>", "[MASK]", "<sep>", "xyz_tok"]
    while len(texts) < n:
        k = _pick(rng, kinds)
        if k == "sentence":
            s = _sentence(rng, rng.randint(3, 20))
        elif k == "short":
            s = _sentence(rng, rng.randint(1, 3))
        elif k == "long":
            s = " ".join(_sentence(rng, rng.randint(5, 25)) for _ in range(rng.randint(3, 12)))
        elif k == "code":
            s = _pick(rng, CODE)
            if rng.random() < 0.5:
                s = s + _pick(rng, WS) + _pick(rng, CODE)
        elif k == "digits":
            s = "".join(_pick(rng, DIGITS) + _pick(rng, [" ", "", ",", ".", "-", "\n"]) for _ in range(rng.randint(1, 8)))
        elif k == "ws":
            s = "".join(_pick(rng, WS) + (_word(rng) if rng.random() < 0.5 else "") for _ in range(rng.randint(1, 8)))
        elif k == "anychar":
            s = _any_chars(rng, rng.randint(1, 30))
        elif k == "random":
            s = _random_chars(rng, rng.randint(1, 40))
        elif k == "special":
            parts = []
            for _ in range(rng.randint(1, 6)):
                parts.append(_pick(rng, specials) if rng.random() < 0.4 else _sentence(rng, rng.randint(0, 4)))
                parts.append(_pick(rng, ["", " ", "  ", "\n", "\t"]))
            s = "".join(parts)
        elif k == "contraction":
            s = "".join(_pick(rng, ["", " ", "I", "you", "THEY", "x", "1"]) + _pick(rng, CONTRACTIONS) for _ in range(rng.randint(1, 6)))
        elif k == "punct":
            s = "".join(_pick(rng, PUNCT) + (_word(rng) if rng.random() < 0.3 else "") + (" " if rng.random() < 0.3 else "") for _ in range(rng.randint(1, 10)))
        elif k == "emoji":
            s = "".join(_pick(rng, EMOJI) + _pick(rng, ["", "", " ", "a", "\u200d", "\ufe0f", "🏽"]) for _ in range(rng.randint(1, 8)))
        else:
            s = "".join(_pick(rng, [_word(rng), _pick(rng, WS), _random_chars(rng, 3), _pick(rng, DIGITS),
                                    _pick(rng, PUNCT), _pick(rng, COMBINING), _pick(rng, specials)])
                        for _ in range(rng.randint(1, 15)))
        texts.append(s)
    return texts


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else None
    for t in corpus()[:n]:
        print(json.dumps(t))
