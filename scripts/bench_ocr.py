"""Text reading (`index --ocr`, `search --words`) benchmark: recall, precision and character error rate on rendered
words, the words phase's cost per picture against the embedding's, and indexing throughput with and without OCR.

Usage:  .venv/bin/python scripts/bench_ocr.py [--per 2] [--zh-per 1] [--no-text 12] [--n 100] [--repeat 2] [--quick]

Renders its own test set (--size, default 640x480, JPEG quality 90): distinct English dictionary words, three to a
picture, at 12, 16, 24, 32, 48 and 64 px, and common Chinese four-character phrases, two to a picture, at 16, 24,
32 and 48 px; each dark on light and light on dark, on a plain, a photo-like (scripts/benchlib.py's make_photo) and
a real photo background (scikit-image's bundled photos, as scripts/demo.py's demo set), toned so the ink stands
out; turned by 0-10 degrees either way; plus pictures without text (photo-like ones and the real photos as they
are). Then, in one run:
(a) `searchengine index --ocr` of the set (random-weight ViT-B-32: speed does not depend on the weights, and the
    words do not depend on the model at all) into a fresh library;
(b) recall: every rendered word is searched (`--words WORD`, through the Library API) and must return its
    picture; a Chinese phrase is searched whole, and each of its two-character words too; precision: of all the
    pictures the searches return, the share whose rendered text holds the word; both overall, for English words
    of 16 px and more, and by size, background and polarity;
(c) character error rate of the text read against the rendered text (edit distance / length; case-insensitive,
    spaces collapsed; without whitespace for Chinese);
(d) what pictures without text cost, two ways. In this process, one thread, after a warm-up, what the product
    does per picture beyond the embedding: OCR's gate on the image the model's decode made (all a photo without
    text costs), and where it opens the words phase's reading (a reduced JPEG decode and OcrEngine.read); on the
    test set and on the camera folder's photos, against the embedding's seconds per picture (`embed_seconds` /
    pictures of `index` without --ocr over the same pictures); the work runs one single-threaded worker per
    core, so the share is (seconds / cores) / embed seconds. End to end: the camera folder's photos without text indexed
    without and with --ocr (fresh libraries, interleaved --repeat times), share = (embed + words seconds with)
    / (embed seconds without) - 1, whichever phase the product does the work in. embed_seconds holds the decode
    workers' start (a second or two a run), which flatters the shares on small runs: `*_steady` figures divide
    by the steady embedding cost, (E(n) - E(n/4)) / (3n/4), from one more run over every fourth of those photos;
(e) throughput on a camera folder (--n photos of --camera-size, 1 in 10 holding text): `index` without and with
    --ocr on fresh libraries, interleaved --repeat times; ratio = embed_without / (embed_with + words_with), that
    is (pictures / (embed + words seconds) with OCR) / (pictures / embed seconds without), the median of the
    rounds (and the best); and the text photos' word recall.
Goals (issue "Find the words"): recall >= 0.95 and precision >= 0.99 for English words of 16 px and more, recall
>= 0.90 for Chinese (whole phrases), photos without text <= 15% of the embedding time (each of (d)'s figures is
judged), throughput with --ocr on a camera folder >= 0.6x of without. The camera folder is generated once under
.bench/ocr/ (git-ignored); the test set and the libraries go in a scratch folder there, removed at the end.
Prints a table; the last line is JSON (with samples of the misses, false hits and misreadings).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
from benchlib import CORES, ROOT, SEARCHENGINE, cli_env, foreign_share

LATIN_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FONT_PACKAGES = {LATIN_FONT: "fonts-dejavu-core", CJK_FONT: "fonts-wqy-microhei"}

EN_SIZES = (12, 16, 24, 32, 48, 64)
ZH_SIZES = (16, 24, 32, 48)
BACKGROUNDS = ("plain", "photo", "real")
WORDS_PER_PICTURE = 3
PHRASES_PER_PICTURE = 2
MAX_ANGLE = 10.0
TEXT_EVERY = 10  # 1 photo in 10 of the camera folder holds text
# scikit-image's bundled photos without text of their own (demo.py's set less "page" and "text")
REAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
               "camera", "moon", "brick", "grass", "gravel", "cat", "motorcycle_left", "rough_wall")
GOALS = {"en_ge16_recall": (">=", 0.95), "en_ge16_precision": (">=", 0.99), "zh_recall": (">=", 0.90),
         "no_text_share_end_to_end": ("<=", 0.15), "no_text_to_embed_camera": ("<=", 0.15),
         "no_text_to_embed_test_set": ("<=", 0.15), "throughput_ratio": (">=", 0.6)}

ENGLISH = """
apple anchor autumn bakery balcony bamboo banner barrel basket battery beacon blanket blossom bottle bracelet
breakfast bucket butter cabinet camera candle canyon captain carpet castle ceiling chapter cherry chimney circus
climate clover cobalt coffee compass copper cottage cowboy crystal cupboard curtain cushion dancer desert diamond
dinner doctor dolphin donkey dragon drawer eagle elbow elephant empire engine falcon farmer feather festival
fiddle finger flannel flower forest fountain fossil garage garlic giraffe glacier gravel guitar hammer harbour
harvest helmet highway hollow horizon hunter iceberg island ivory jacket jaguar journey jungle kettle kingdom
kitchen ladder lagoon lantern lemon library lizard lobster magnet mango marble market meadow melody mirror monkey
morning mountain museum mustard napkin needle nickel noodle number oyster orchard orange paddle palace pancake
panther parrot peanut pebble pencil pepper piano pillow pirate planet pocket potato pumpkin puzzle quarry rabbit
radio raven ribbon river rocket saddle sailor salmon sandal scarf science scooter shadow shelter silver sketch
sparrow spider spinach squirrel station statue stone summer sunset switch tablet temple thunder ticket tiger
timber tomato tractor trumpet tunnel turtle umbrella valley velvet village violin volcano wagon walnut wander
whisper willow window winter wizard yellow zipper acorn almond arrow atlas avenue badge blender bridge broccoli
cactus canvas carrot cedar cinema cliff cloud comet coral crayon daisy denim dessert echo emerald fabric fence
ferry flute garden ginger glove goblet granite hazel honey hostel insect jasmine jelly juniper kayak koala
laptop lettuce linen locket lotus maple marina medal mitten motel muffin nectar oasis olive opera otter pasta
peach pepperoni pigeon pillar plaza poster prism quilt radish raisin recipe robin sapphire satin seashell
sherbet skater sleigh spruce stadium sugar tavern teapot thimble toffee tulip tundra turbine vanilla vessel
waffle walrus wheat yogurt zebra bakery harp meteor nutmeg parsley pretzel quiver safari sundial trolley
""".split()

CHINESE = """
欢迎光临 禁止吸烟 生日快乐 新年快乐 注意安全 小心地滑 请勿停车 营业时间 出口通道 停车收费 免费无线 会议中心
人民广场 地铁入口 公共厕所 禁止拍照 天气预报 今日特价 全场八折 开业大吉 恭喜发财 万事如意 身体健康 工作顺利
春节快乐 中秋团圆 早餐供应 外卖配送 手机维修 儿童乐园 保持安静 售票窗口 行李寄存 医院急诊 药品柜台 水果蔬菜
新鲜牛奶 面包蛋糕 咖啡茶饮 北京烤鸭 长江大桥 黄河公园 电影票房 音乐节目 体育中心 酒店前台 旅游景点 山水风景
城市规划 环境保护 节约用水 垃圾分类 消防通道 安全出口 紧急疏散 学校食堂 图书借阅 自助银行 邮政快递 机场大巴
高速公路 南京东路 西湖美景 红烧排骨 麻辣火锅 清明时节 端午安康 家具商场 五金建材 服装批发
""".split()


def distinct_words(words: list[str]) -> list[str]:
    """Each word once, and none inside another (a search for one must not find the other's picture)."""
    seen = list(dict.fromkeys(w.lower() for w in words))
    return [w for w in seen if not any(w != o and (w in o or o in w) for o in seen)]


# ---------------------------------------------------------------- rendering

@dataclass
class Picture:
    name: str
    lang: str  # en, zh or none
    px: int  # text size (0: none)
    background: str
    dark: bool  # light ink on a dark background
    angle: float
    lines: list[str] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)  # what is searched for it (in lower case)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def font(path: Path, px: int) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(str(path), px)


def missing_fonts() -> list[str]:
    return [f"{p} (apt-get install {FONT_PACKAGES[p]})" for p in (LATIN_FONT, CJK_FONT) if not p.exists()]


def real_photos(size: tuple[int, int]) -> list[Any]:
    """The bundled scikit-image photos that load here, each cover-resized and centre-cropped to `size`."""
    from PIL import Image, ImageOps
    from skimage import data

    photos = []
    for name in REAL_PHOTOS:
        if not hasattr(data, name):
            continue
        try:
            pixels = getattr(data, name)()
        except Exception:  # noqa: BLE001 - some need a download; the bundled ones suffice
            continue
        if pixels.dtype != np.uint8:
            pixels = (pixels * 255).astype(np.uint8)
        image = Image.fromarray(pixels).convert("RGB")
        photos.append(ImageOps.fit(image, size, Image.Resampling.BICUBIC))
    if not photos:
        raise SystemExit("no scikit-image photo could be loaded (pip install scikit-image)")
    return photos


def toned(image: Any, dark: bool) -> Any:
    """The picture with its contrast halved, into the upper (light) or lower (dark) part of the range."""
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"), np.float32) * 0.45 + (0 if dark else 140)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def background(kind: str, size: tuple[int, int], seed: int, dark: bool, photos: list[Any]) -> Any:
    from PIL import Image

    if kind == "plain":
        return Image.new("RGB", size, (30, 30, 30) if dark else (235, 235, 235))
    if kind == "photo":
        return toned(benchlib.make_photo(seed, size), dark)
    return toned(photos[seed % len(photos)], dark)


def wrap(words: list[str], face: Any, width: float) -> list[str]:
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    lines: list[str] = []
    for word in words:
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=face) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def draw_text(image: Any, lines: list[str], face: Any, px: int, angle: float, rng: np.random.Generator,
              ink: tuple[int, int, int] | None = None) -> Any:
    """`lines` centred one under the other in a block placed at random where it fits turned by `angle` degrees;
    `ink` None: dark or light, whichever stands out from the block's background."""
    from PIL import Image, ImageDraw

    width, height = image.size
    layer = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(layer)
    step = int(px * 1.5)
    widths = [draw.textbbox((0, 0), line, font=face)[2] for line in lines]
    bw, bh = max(widths), step * len(lines)
    a = np.radians(abs(angle))
    half_w, half_h = (bw * np.cos(a) + bh * np.sin(a)) / 2 + 4, (bw * np.sin(a) + bh * np.cos(a)) / 2 + 4
    cx = rng.uniform(half_w, width - half_w) if width > 2 * half_w else width / 2
    cy = rng.uniform(half_h, height - half_h) if height > 2 * half_h else height / 2
    top = cy - bh / 2
    for n, (line, w) in enumerate(zip(lines, widths)):
        box = draw.textbbox((0, 0), line, font=face)
        draw.text((cx - w / 2, top + n * step + (step - (box[3] - box[1])) / 2 - box[1]), line, font=face, fill=255)
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    if ink is None:
        region = np.asarray(image.convert("L").crop((int(cx - half_w), int(cy - half_h),
                                                      int(cx + half_w), int(cy + half_h))), np.float32)
        ink = (20, 20, 25) if region.mean() > 128 else (235, 235, 235)
    image = image.copy()
    image.paste(Image.new("RGB", image.size, ink), (0, 0), layer)
    return image


def save_jpeg(image: Any, path: Path) -> None:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue())


def casing(word: str, rng: np.random.Generator) -> str:
    roll = rng.random()
    return word.upper() if roll < 0.15 else word.capitalize() if roll < 0.4 else word


def render_test_set(folder: Path, args: argparse.Namespace) -> list[Picture]:
    """The English, Chinese and no-text pictures (JPEGs in `folder`), with what each holds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    size = args.size
    photos = real_photos(size)
    words = distinct_words(ENGLISH)
    rng.shuffle(words)
    phrases = list(dict.fromkeys(CHINESE))
    rng.shuffle(phrases)
    pictures: list[Picture] = []
    seed = 1000 * args.seed
    w_at = p_at = 0
    for lang, sizes, per in (("en", args.en_sizes, args.per), ("zh", args.zh_sizes, args.zh_per)):
        for px in sizes:
            for kind in BACKGROUNDS:
                for dark in (False, True):
                    for _ in range(per):
                        seed += 1
                        angle = float(rng.uniform(0, MAX_ANGLE) * rng.choice((-1, 1)))
                        if lang == "en":
                            chosen = [words[(w_at + k) % len(words)] for k in range(WORDS_PER_PICTURE)]
                            w_at += WORDS_PER_PICTURE
                            face = font(LATIN_FONT, px)
                            lines = wrap([casing(w, rng) for w in chosen], face, 0.8 * size[0])
                        else:
                            chosen = [phrases[(p_at + k) % len(phrases)] for k in range(PHRASES_PER_PICTURE)]
                            p_at += PHRASES_PER_PICTURE
                            face = font(CJK_FONT, px)
                            lines = chosen
                        picture = Picture(f"{lang}_{px:02d}_{kind}_{'dark' if dark else 'light'}_{seed:06d}.jpg",
                                          lang, px, kind, dark, round(angle, 2), lines, chosen)
                        ink = (235, 235, 235) if dark else (20, 20, 25)
                        image = draw_text(background(kind, size, seed, dark, photos), lines, face, px, angle, rng,
                                          ink)
                        save_jpeg(image, folder / picture.name)
                        pictures.append(picture)
    for _ in range(args.no_text):
        seed += 1
        picture = Picture(f"none_photo_{seed:06d}.jpg", "none", 0, "photo", False, 0.0)
        save_jpeg(benchlib.make_photo(seed, size), folder / picture.name)
        pictures.append(picture)
    for k, photo in enumerate(photos[:args.real_no_text]):
        picture = Picture(f"none_real_{k:02d}.jpg", "none", 0, "real", False, 0.0)
        save_jpeg(photo, folder / picture.name)
        pictures.append(picture)
    return pictures


def camera_folder(args: argparse.Namespace) -> tuple[Path, dict[str, list[str]]]:
    """--n camera-sized photos (benchlib's generated ones), every TEXT_EVERY-th replaced by a photo-like picture
    with three English words on it (text of 3-6% of the picture's height); built once under the cache. Returns the
    folder and the words of each text photo."""
    w, h = args.camera_size
    base = args.cache / "ocr"
    folder = base / f"camera-{w}x{h}-{args.n}"
    truth_file = folder / "texts.json"
    if truth_file.exists():
        return folder, json.loads(truth_file.read_text())
    photos = benchlib.write_photos(args.cache / "photos" if (w, h) == benchlib.PHOTO_SIZE
                                   else base / f"photos-{w}x{h}", args.n, size=(w, h))
    building = Path(tempfile.mkdtemp(dir=base, prefix="building-"))
    rng = np.random.default_rng(7)
    words = distinct_words(ENGLISH)
    rng.shuffle(words)
    truth: dict[str, list[str]] = {}
    for k, photo in enumerate(photos):
        if k % TEXT_EVERY:
            try:
                os.link(photo, building / photo.name)
            except OSError:
                shutil.copyfile(photo, building / photo.name)
            continue
        chosen = words[len(truth) * WORDS_PER_PICTURE:(len(truth) + 1) * WORDS_PER_PICTURE]
        px = int(h * rng.uniform(0.03, 0.06))
        face = font(LATIN_FONT, px)
        lines = wrap([casing(c, rng) for c in chosen], face, 0.8 * w)
        angle = float(rng.uniform(0, MAX_ANGLE) * rng.choice((-1, 1)))
        image = draw_text(benchlib.make_photo(90_000 + k, (w, h)), lines, face, px, angle, rng)
        name = f"text_{k:05d}.jpg"
        save_jpeg(image, building / name)
        truth[name] = chosen
    (building / "texts.json").write_text(json.dumps(truth))
    try:
        building.rename(folder)
    except OSError:  # built meanwhile by another run
        shutil.rmtree(building, ignore_errors=True)
    return folder, json.loads(truth_file.read_text())


# ---------------------------------------------------------------- indexing and searching

def run_index(folder: Path, library: Path, model_dir: Path, ocr: bool) -> tuple[dict, float]:
    """`searchengine index --json` (with --ocr or not) of `folder` into a fresh `library`: its summary, wall s."""
    shutil.rmtree(library, ignore_errors=True)
    command = [*SEARCHENGINE, "index", str(folder), "--library", str(library), "--model", f"local-dir:{model_dir}",
               "--json", *(["--ocr"] if ocr else [])]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=cli_env())
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"index failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


class Searcher:
    """`--words` searches of one library through the API: the names of the pictures returned."""

    def __init__(self, library: Path):
        from searchengine.library.api import Library

        self.lib = Library.open(library, notice=lambda message: None)
        self.limit = max(1, self.lib.status().images)

    def names(self, words: str) -> set[str]:
        from searchengine.query.filters import SearchFilters

        hits = self.lib.search(filters=SearchFilters.parse(words=words), limit=self.limit, words=False)
        return {Path(hit.path).name for hit in hits}

    def text(self, path: Path) -> str:
        return self.lib.show(str(path)).text or ""

    def close(self) -> None:
        self.lib.close()


def holds(picture_lines: list[str], term: str, cjk: bool) -> bool:
    """Whether the rendered text holds `term`: as a word (English), as a run of characters in a line (Chinese)."""
    if cjk:
        return any(term in "".join(line.split()) for line in picture_lines)
    return any(term in line.lower().split() for line in picture_lines)


@dataclass
class Tally:
    searched: int = 0
    found: int = 0
    returned: int = 0
    correct: int = 0
    cer_errors: int = 0
    cer_chars: int = 0

    def add(self, other: "Tally") -> None:
        for key in vars(self):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def figures(self) -> dict:
        return {"searched": self.searched,
                "recall": round(self.found / self.searched, 4) if self.searched else None,
                "returned": self.returned,
                "precision": round(self.correct / self.returned, 4) if self.returned else None,
                "cer": round(self.cer_errors / self.cer_chars, 4) if self.cer_chars else None}


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normal_text(text: str, cjk: bool) -> str:
    import unicodedata

    folded = unicodedata.normalize("NFKC", text).lower()
    return "".join(folded.split()) if cjk else " ".join(folded.split())


def accuracy(pictures: list[Picture], folder: Path, searcher: Searcher) -> dict:
    """Recall, precision and CER, by language, size, background and polarity; samples of misses and false hits."""
    by: dict[str, Tally] = defaultdict(Tally)
    misses: list[dict] = []
    false_hits: list[dict] = []
    misread: list[dict] = []
    read: dict[str, str] = {p.name: searcher.text(folder / p.name) for p in pictures}
    lines_of = {p.name: p.lines for p in pictures}

    def count(keys: list[str], tally: Tally) -> None:
        for key in keys:
            by[key].add(tally)

    for p in pictures:
        polarity = "dark" if p.dark else "light"
        keys = [p.lang, f"{p.lang}_px{p.px}", f"{p.lang}_{p.background}", f"{p.lang}_{polarity}"]
        if p.lang == "en" and p.px >= 16:
            keys.append("en_ge16")
        if p.lang == "none":
            continue
        cjk = p.lang == "zh"
        truth = normal_text(p.text, cjk)
        errors = edit_distance(normal_text(read[p.name], cjk), truth)
        count(keys, Tally(cer_errors=errors, cer_chars=len(truth)))
        if errors and len(misread) < 40:
            misread.append({"picture": p.name, "text": p.text, "read": read[p.name], "errors": errors})
        queries = [(t, keys) for t in p.terms]
        if cjk:  # each phrase's two-character words as well
            queries += [(t[i:i + 2], [f"zhword_px{p.px}", "zhword"]) for t in p.terms for i in range(0, len(t) - 1, 2)]
        for term, term_keys in queries:
            names = searcher.names(term)
            correct = {n for n in names if holds(lines_of[n], term, cjk)}
            tally = Tally(searched=1, found=int(p.name in names), returned=len(names), correct=len(correct))
            count(term_keys, tally)
            if p.name not in names and len(misses) < 40:
                misses.append({"term": term, "picture": p.name, "read": read[p.name]})
            for wrong in sorted(names - correct)[:3]:
                if len(false_hits) < 40:
                    false_hits.append({"term": term, "picture": wrong, "read": read[wrong]})
    overall = Tally()
    for key in ("en", "zh", "zhword"):
        overall.add(by[key])
    figures = {key: tally.figures() for key, tally in sorted(by.items(), key=lambda item: group_order(item[0]))
               if tally.searched or tally.cer_chars}
    return {"groups": figures, "precision": overall.figures()["precision"], "misses": misses,
            "false_hits": false_hits, "misread": misread, "read": read}


def group_order(key: str) -> tuple:
    """en, en_ge16, en_px12, en_px16 ..., en_plain ..., en_light, en_dark; then zh, then zhword."""
    lang, _, rest = key.partition("_")
    kinds = ["", "ge16", "px", *BACKGROUNDS, "light", "dark"]
    kind = "px" if rest.startswith("px") else rest
    return (["en", "zh", "zhword"].index(lang) if lang in ("en", "zh", "zhword") else 9,
            kinds.index(kind) if kind in kinds else 99, int(rest[2:]) if kind == "px" else 0, key)


# ---------------------------------------------------------------- reading, in this process

def time_reading(paths: list[Path], engine: Any) -> list[dict]:
    """Per picture, what the product does, one thread, after a warm-up: the decode for the model
    (load_for_model, ViT-B-32's preprocessing) and OCR's gate on that decoded image (what a photo without text
    costs: the decode is the embedding's own), then the words phase's reading of a picture with text (the reduced
    JPEG decode at READ_SIDE and OcrEngine.read, run where the gate opened)."""
    from indexer.images.decode import PreprocessConfig, load_for_model, load_reduced
    from indexer.pipeline.ocr import READ_SIDE

    cfg = PreprocessConfig(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    datas = [p.read_bytes() for p in paths]
    for data in datas[:2]:
        engine.has_text(load_for_model(data, cfg).image)
        engine.read(load_reduced(data, READ_SIDE))
    rows = []
    for path, data in zip(paths, datas):
        started = time.perf_counter()
        decoded = load_for_model(data, cfg)
        model_decode = time.perf_counter()
        opened = engine.has_text(decoded.image)
        gated = time.perf_counter()
        lines = engine.read(load_reduced(data, READ_SIDE)) if opened else []
        done = time.perf_counter()
        rows.append({"name": path.name, "decode_s": model_decode - started, "gate_s": gated - model_decode,
                     "read_s": done - gated if opened else None, "total_s": done - model_decode,
                     "lines": len(lines), "gate": opened})
    return rows


def mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return round(statistics.fmean(values), 4) if values else None


def per_core_share(read_s: float | None, embed_s: float | None) -> float | None:
    """The words phase runs one single-threaded reader per core: its wall seconds per picture are read_s / cores."""
    return round(read_s / CORES / embed_s, 4) if read_s and embed_s else None


def reading_figures(rows: list[dict], with_text: set[str], embed_s: float | None,
                    steady_s: float | None = None) -> dict:
    text_rows = [r for r in rows if r["name"] in with_text]
    plain_rows = [r for r in rows if r["name"] not in with_text]
    no_text_s, with_text_s = mean_of(plain_rows, "total_s"), mean_of(text_rows, "total_s")
    return {"with_text_pictures": len(text_rows), "no_text_pictures": len(plain_rows),
            "with_text_s": with_text_s, "with_text_model_decode_s": mean_of(text_rows, "decode_s"),
            "no_text_s": no_text_s, "no_text_model_decode_s": mean_of(plain_rows, "decode_s"),
            "no_text_gate_s": mean_of(plain_rows, "gate_s"), "no_text_gate_fired_share": mean_of(plain_rows, "gate"),
            "embed_s_per_picture": round(embed_s, 4) if embed_s else None,
            "no_text_to_embed": per_core_share(no_text_s, embed_s),
            "no_text_to_embed_1_thread": round(no_text_s / embed_s, 4) if no_text_s and embed_s else None,
            "with_text_to_embed": per_core_share(with_text_s, embed_s),
            "embed_s_per_picture_steady": steady_s, "no_text_to_embed_steady": per_core_share(no_text_s, steady_s)}


# ---------------------------------------------------------------- index runs: without and with --ocr

def linked(paths: list[Path], folder: Path) -> Path:
    """A folder of hard links to `paths` (copies where links cannot be made)."""
    folder.mkdir(parents=True)
    for path in paths:
        try:
            os.link(path, folder / path.name)
        except OSError:
            shutil.copyfile(path, folder / path.name)
    return folder


def paired(folder: Path, model_dir: Path, scratch: Path, repeat: int, keep_ocr: bool = False) -> list[dict]:
    """`index` of `folder` without and with --ocr on fresh libraries, interleaved `repeat` times (the order swapped
    every round): each round's figures. `keep_ocr` leaves the last --ocr library at scratch / "ocr"."""
    rounds = []
    for r in range(repeat):
        reports: dict[bool, tuple[dict, float]] = {}
        for ocr in ((False, True) if r % 2 == 0 else (True, False)):
            reports[ocr] = run_index(folder, scratch / ("ocr" if ocr else "plain"), model_dir, ocr)
            if not (ocr and keep_ocr and r == repeat - 1):
                shutil.rmtree(scratch / ("ocr" if ocr else "plain"), ignore_errors=True)
        (plain, plain_wall), (ocr_report, ocr_wall) = reports[False], reports[True]
        n = plain["added"]
        if n != ocr_report["added"] or n == 0:
            raise RuntimeError(f"the runs of {folder} added {n} and {ocr_report['added']} pictures")
        with_s = ocr_report["embed_seconds"] + ocr_report["words_seconds"]
        rounds.append({"pictures": n, "embed_s_without": round(plain["embed_seconds"], 3),
                       "embed_s_with": round(ocr_report["embed_seconds"], 3),
                       "words_s_with": round(ocr_report["words_seconds"], 3),
                       "words_read": ocr_report["words_read"], "words_with_text": ocr_report["words_with_text"],
                       "ips_without": round(n / plain["embed_seconds"], 3), "ips_with": round(n / with_s, 3),
                       "ratio": round(plain["embed_seconds"] / with_s, 4),
                       "extra_share": round(with_s / plain["embed_seconds"] - 1, 4),
                       "wall_s_without": round(plain_wall, 2), "wall_s_with": round(ocr_wall, 2)})
    return rounds


def median_of(rounds: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 4)


def throughput_figures(rounds: list[dict], recall: float | None) -> dict:
    """(pictures / (embed + words seconds) with OCR) / (pictures / embed seconds without), per round."""
    return {"photos": rounds[0]["pictures"], "repeat": len(rounds), "ratio_median": median_of(rounds, "ratio"),
            "ratio_best": max(r["ratio"] for r in rounds), "ips_without_median": median_of(rounds, "ips_without"),
            "ips_with_median": median_of(rounds, "ips_with"), "text_photo_word_recall": recall, "rounds": rounds}


def no_text_figures(rounds: list[dict], steady_s: float | None) -> dict:
    """What --ocr adds to indexing photos without text, wherever the product does it (the embedding phase or the
    words phase): (embed + words seconds with) / (embed seconds without) - 1, start-ups included."""
    n = rounds[0]["pictures"]
    extra = statistics.median(r["embed_s_with"] + r["words_s_with"] - r["embed_s_without"] for r in rounds)
    return {"photos": n, "share_median": median_of(rounds, "extra_share"),
            "share_best": min(r["extra_share"] for r in rounds), "extra_s_per_photo": round(extra / n, 4),
            "embed_s_per_photo": round(median_of(rounds, "embed_s_without") / n, 4),
            "embed_s_per_photo_steady": steady_s,
            "extra_to_steady_embed": round(extra / n / steady_s, 4) if steady_s else None, "rounds": rounds}


def steady_embed(paths: list[Path], embed_s: float, model_dir: Path, scratch: Path) -> float | None:
    """The embedding's steady seconds per picture, (E(n) - E(n/4)) / (n - n/4), from `embed_s` (the embedding phase
    over all of `paths`) and a run without OCR over every fourth of them: embed_seconds holds the start of the decode
    workers, a second or two a run. None where noise made it meaningless."""
    small, _ = run_index(linked(paths[::4], scratch / "pictures"), scratch / "library", model_dir, ocr=False)
    shutil.rmtree(scratch, ignore_errors=True)
    extra = len(paths) - small["added"]
    steady = (embed_s - small["embed_seconds"]) / extra if extra > 0 else 0.0
    return round(steady, 4) if steady > 0 else None


def word_recall(library: Path, truth: dict[str, list[str]]) -> float | None:
    searcher = Searcher(library)
    try:
        pairs = [(name, word) for name, words in truth.items() for word in words]
        found = sum(name in searcher.names(word) for name, word in pairs)
    finally:
        searcher.close()
    return round(found / len(pairs), 4) if pairs else None


# ---------------------------------------------------------------- main

def size_arg(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def sizes_arg(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per", type=int, default=2, help="English pictures per size, background and polarity")
    parser.add_argument("--zh-per", type=int, default=1, help="Chinese pictures per size, background and polarity")
    parser.add_argument("--en-sizes", type=sizes_arg, default=EN_SIZES, help="English text sizes in px, a,b,c")
    parser.add_argument("--zh-sizes", type=sizes_arg, default=ZH_SIZES, help="Chinese text sizes in px")
    parser.add_argument("--no-text", type=int, default=12, help="photo-like pictures without text")
    parser.add_argument("--real-no-text", type=int, default=len(REAL_PHOTOS),
                        help="real photos without text (at most the scikit-image ones that load)")
    parser.add_argument("--size", type=size_arg, default=(640, 480), help="test set pictures, WxH")
    parser.add_argument("--n", type=int, default=100, help="photos in the camera folder (1 in 10 with text)")
    parser.add_argument("--camera-size", type=size_arg, default=benchlib.PHOTO_SIZE, help="its photos, WxH")
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds of the camera folders' runs (without and with OCR, the order swapped each round)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=benchlib.WORK, help="the model, camera folder and scratch")
    parser.add_argument("--model", type=Path, default=None,
                        help="a local-dir model folder instead of the random ViT-B-32 (the smoke test's tiny one)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run: 16 and 32 px English, 24 px Chinese, 1 picture each, 10 1600x1200 photos")
    args = parser.parse_args(argv)
    if args.quick:
        args.per, args.zh_per, args.en_sizes, args.zh_sizes = 1, 1, (16, 32), (24,)
        args.no_text, args.real_no_text, args.n, args.camera_size, args.repeat = 3, 3, 10, (1600, 1200), 1
    return args


def goal_figures(values: dict[str, float | None]) -> dict:
    out = {}
    for key, (op, goal) in GOALS.items():
        value = values.get(key)
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        out[key] = {"value": value, "goal": f"{op} {goal}", "met": met}
    return out


def print_table(summary: dict) -> None:
    groups = summary["accuracy"]
    print(f"{'group':<22}{'searched':>9}{'recall':>9}{'returned':>9}{'precision':>10}{'cer':>8}")
    for key, g in groups.items():
        cells = [f"{g[k]:.3f}" if isinstance(g[k], float) else "-" if g[k] is None else str(g[k])
                 for k in ("searched", "recall", "returned", "precision", "cer")]
        print(f"{key:<22}{cells[0]:>9}{cells[1]:>9}{cells[2]:>9}{cells[3]:>10}{cells[4]:>8}")
    print(f"pictures {summary['pictures']}; characters read in those without text: {summary['no_text_chars_read']}")
    for where in ("test_set", "camera"):
        t = summary["timing"][where]
        steady = (f"; steady embed {t['embed_s_per_picture_steady']} s: {t['no_text_to_embed_steady']}"
                  if t["embed_s_per_picture_steady"] else "")
        print(f"OCR work {where:<9} ({t['size']}, 1 thread, beyond the model's decode): with text "
              f"{t['with_text_s']} s, without {t['no_text_s']} s (the model's decode {t['no_text_model_decode_s']} s, "
              f"gate fired "
              f"{t['no_text_gate_fired_share']}); embed {t['embed_s_per_picture']} s/picture -> no text / embed "
              f"{t['no_text_to_embed']} per core ({t['no_text_to_embed_1_thread']} on 1 thread{steady})")
    nt = summary["no_text_end_to_end"]
    print(f"index --ocr on {nt['photos']} camera photos without text: +{nt['share_median']} of the embedding time "
          f"(median; best {nt['share_best']}), +{nt['extra_s_per_photo']} s/photo against {nt['embed_s_per_photo']} "
          f"s/photo embedding ({nt['embed_s_per_photo_steady']} steady)")
    tp = summary["throughput"]
    print(f"throughput ({tp['photos']} photos, {summary['camera_text_photos']} with text): {tp['ips_without_median']}"
          f" -> {tp['ips_with_median']} photos/s, ratio median {tp['ratio_median']} best {tp['ratio_best']}, "
          f"text photos' word recall {tp['text_photo_word_recall']}")
    for key, g in summary["goals"].items():
        verdict = "n/a" if g["met"] is None else "met" if g["met"] else "NOT MET"
        print(f"goal {key:<28}{str(g['value']):>10}  {g['goal']:<8} {verdict}")
    print(f"load average before {summary['loadavg_before']}, after {summary['loadavg_after']}, cores {CORES}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    missing = missing_fonts()
    if missing:
        sys.exit("missing fonts: " + ", ".join(missing))
    from indexer.ocr.engine import OcrEngine, unavailable_reason

    if unavailable_reason():
        sys.exit(unavailable_reason())
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    model_dir = args.model or benchlib.random_model(args.cache)
    (args.cache / "ocr").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=args.cache / "ocr", prefix="run-"))
    try:
        test_folder = scratch / "test-set"
        pictures = render_test_set(test_folder, args)
        camera, camera_truth = camera_folder(args)
        camera_paths = sorted(p for p in camera.iterdir() if p.suffix == ".jpg")
        plain_camera = [p for p in camera_paths if p.name not in camera_truth]

        # (a) the test set with --ocr (the words), and without (the embedding's time)
        report, _ = run_index(test_folder, scratch / "test-library", model_dir, ocr=True)
        if report["added"] != len(pictures):
            raise RuntimeError(f"index added {report['added']} of {len(pictures)} pictures")
        if report["words_read"] != len(pictures):
            print(f"warning: index read the words of {report['words_read']} of {len(pictures)} pictures",
                  file=sys.stderr)
        test_plain, _ = run_index(test_folder, scratch / "test-plain", model_dir, ocr=False)
        shutil.rmtree(scratch / "test-plain", ignore_errors=True)

        # (d) reading in this process, on one thread
        engine = OcrEngine(threads=1)
        with_text = {p.name for p in pictures if p.lang != "none"}
        rows, foreign_test = foreign_share(lambda: time_reading([test_folder / p.name for p in pictures], engine))
        camera_rows, foreign_camera = foreign_share(lambda: time_reading(camera_paths, engine))
        del engine

        # (b), (c) recall, precision, CER
        searcher = Searcher(scratch / "test-library")
        try:
            found = accuracy(pictures, test_folder, searcher)
        finally:
            searcher.close()
        shutil.rmtree(scratch / "test-library", ignore_errors=True)

        # (d) end to end on camera photos without text, (e) throughput on the camera folder
        plain_folder = linked(plain_camera, scratch / "camera-no-text")
        no_text_rounds = paired(plain_folder, model_dir, scratch / "no-text", args.repeat)
        steady = steady_embed(plain_camera, statistics.median(r["embed_s_without"] for r in no_text_rounds),
                              model_dir, scratch / "quarter")
        tp_rounds = paired(camera, model_dir, scratch / "camera", args.repeat, keep_ocr=True)
        recall = word_recall(scratch / "camera" / "ocr", camera_truth)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # each library holds a copy of the text tower

    groups = found["groups"]
    no_text = no_text_figures(no_text_rounds, steady)
    timing = {"test_set": {"size": "x".join(map(str, args.size)), "foreign_cpu_share": round(foreign_test, 3),
                           **reading_figures(rows, with_text, test_plain["embed_seconds"] / test_plain["added"])},
              "camera": {"size": "x".join(map(str, args.camera_size)), "foreign_cpu_share": round(foreign_camera, 3),
                         **reading_figures(camera_rows, set(camera_truth), no_text["embed_s_per_photo"], steady)}}
    tp = throughput_figures(tp_rounds, recall)
    values = {"en_ge16_recall": groups.get("en_ge16", {}).get("recall"),
              "en_ge16_precision": groups.get("en_ge16", {}).get("precision"),
              "zh_recall": groups.get("zh", {}).get("recall"),
              "no_text_share_end_to_end": no_text["share_median"],
              "no_text_to_embed_camera": timing["camera"]["no_text_to_embed"],
              "no_text_to_embed_test_set": timing["test_set"]["no_text_to_embed"],
              "throughput_ratio": tp["ratio_median"]}
    summary = {
        "en_recall": groups.get("en", {}).get("recall"), "en_precision": groups.get("en", {}).get("precision"),
        "en_cer": groups.get("en", {}).get("cer"), **{k: values[k] for k in ("en_ge16_recall", "en_ge16_precision")},
        "en_ge16_cer": groups.get("en_ge16", {}).get("cer"),
        "zh_recall": values["zh_recall"], "zh_precision": groups.get("zh", {}).get("precision"),
        "zh_word_recall": groups.get("zhword", {}).get("recall"),
        "zh_word_precision": groups.get("zhword", {}).get("precision"), "zh_cer": groups.get("zh", {}).get("cer"),
        "precision": found["precision"],
        "no_text_chars_read": sum(len(normal_text(found["read"][p.name], True)) for p in pictures
                                  if p.lang == "none"),
        "pictures": {"en": sum(p.lang == "en" for p in pictures), "zh": sum(p.lang == "zh" for p in pictures),
                     "none": sum(p.lang == "none" for p in pictures)},
        "camera_text_photos": len(camera_truth),
        "index_test_set": {k: report[k] for k in ("added", "embed_seconds", "words_read", "words_with_text",
                                                  "words_failed", "words_seconds", "seconds")},
        "timing": timing, "no_text_end_to_end": no_text, "throughput": tp, "goals": goal_figures(values),
        "accuracy": groups, "misses": found["misses"], "false_hits": found["false_hits"],
        "misread": found["misread"],
        "args": {"per": args.per, "zh_per": args.zh_per, "en_sizes": list(args.en_sizes),
                 "zh_sizes": list(args.zh_sizes), "size": list(args.size), "n": args.n,
                 "camera_size": list(args.camera_size), "repeat": args.repeat, "quick": args.quick,
                 "model": str(model_dir)},
        "cores": CORES, "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print_table(summary)
    return benchlib.emit(summary)


if __name__ == "__main__":
    main()
