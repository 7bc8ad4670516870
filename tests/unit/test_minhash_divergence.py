"""The tail rule of near-duplicate excerpts: a shared opening that ends in a different text is two posts.

Every pair in :data:`PAIRS` passes the whole-text Jaccard threshold, so the rule alone
decides whether :func:`group_pairs` keeps it. The posts are hand-written, as they look
after cleaning (NFKC, placeholders and the "..." marker removed).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.spark.arrow_text import utf8_buffers
from pipelines.spark.minhash import (
    _window_hashes,
    group_losers,
    group_pairs,
    jaccard,
    shingle_sets,
    tail_divergent,
)
from pipelines.spark.minhash_kernels import pair_common_counts, tails_diverge

K, THRESHOLD = 4, 0.9  # the defaults of CleanConfig (shingle_chars, near_dup_threshold)

# (a) Two different posts of one template: 90% shared opening, then different endings.
EN_NOTICE = ("Riverside Library weekend notice: the reading room closes early on Saturday for the book fair, "
             "the children's corner stays open until five, and returned books go in the box by the east door. "
             "On Sunday the reading room ")
EN_SUNDAY_OPEN, EN_SUNDAY_CLOSED = EN_NOTICE + "is open until five.", EN_NOTICE + "stays closed all day."
ZH_NOTICE = ("【幸福里社区通知】本周六上午九点，社区将在小区南门广场举办义诊活动，市第一医院的医生将为居民免费测量血压、血糖，"
             "并提供健康咨询，请有需要的居民携带身份证和医保卡准时参加。活动期间南门广场停车位暂停使用，请车主提前挪车。"
             "周日上午九点，社区将在小区南门广场举办消防演练，市第一医院的医生将为居民讲解急救知识，请居民准时参加。")
ZH_PARKING_CLOSED, ZH_NO_PARKING = ZH_NOTICE + "活动期间南门广场停车位暂停使用。", ZH_NOTICE + "演练期间请勿在南门广场停车。"

# (b) A re-crawl of one post with small edits spread through it (at k=4 each one-character
# edit changes 4 shingles of each side, so J >= 0.9 allows about one edit per 76 characters).
EN_TRIP = ("Spent the long weekend hiking the Lakeshore Trail with two friends. We started at the north trailhead on "
           "Friday morning and camped at Pine Cove the first night. The trail is well marked but muddy after the "
           "rain, so bring proper boots and spare socks. Water is easy to find at the creeks, but filter "
           "everything. The views from the ridge were the best part, and we saw two eagles above the lake. "
           "Next time I would ")
EN_TRIP_EDITED = (EN_TRIP.replace("two friends", "2 friends").replace("muddy after", "muddy afer")
                  .replace("spare socks", "spare sock").replace("two eagles", "2 eagles"))
ZH_TRIP = ("今年夏天第一次带孩子去青岛，住在八大关附近的民宿，步行十分钟就到第二海水浴场。早上人少，沙滩很干净，"
           "孩子捡了一小桶贝壳。中午去劈柴院吃了海鲜锅贴和辣炒蛤蜊，味道不错但排队要四十分钟。下午坐观光巴士到小鱼山，"
           "在山顶能看到红瓦绿树和整片海湾，傍晚的光线特别适合拍照。晚上去台东步行街逛夜市，烤鱿鱼十五元一串，"
           "孩子最喜欢的是现做的炸鲜奶。第二天一早去了海洋馆，建议提前在网上买票，现场窗口要排很久。总体来说，"
           "青岛适合亲子游，交通方便，物价也还算合理，下次想秋天再来，人会少一些，也想去崂山走走，"
           "听说从太清宫上山的路线风景最好，不过要提前看好天气预报，雨天山路很滑，带老人和孩子的话最好坐索道，")
ZH_TRIP_EDITED = ZH_TRIP.replace("第一次", "头一次").replace("四十分钟", "五十分钟").replace("十五元", "二十元")

# (c) Complete posts that differ only in their last characters (a corrected time, a phone number).
EN_OUTAGE = ("Power maintenance on Harbor Road: crews will replace the transformer outside number 42 on Tuesday, "
             "so homes between Mill Street and the bridge lose power from nine in the morning. Please unplug "
             "computers beforehand. Power returns at 14:05.")
ZH_OUTAGE = ("【停电通知】因线路检修，本周二上午九点至下午两点，滨河路四十二号至大桥之间的居民楼将暂停供电，"
             "请提前做好准备，关闭电脑等用电设备，冰箱内的食品请妥善保存。检修期间请勿靠近施工区域，"
             "注意安全。检修结束后将立即恢复供电，如有疑问请拨打客服电话：96598")

PAIRS = [  # (case, left, right, left truncated, right truncated, tail-divergent, kept as a pair)
    ("en excerpts of two posts of one template", EN_SUNDAY_OPEN, EN_SUNDAY_CLOSED, True, True, True, False),
    ("zh excerpts of two posts of one template", ZH_PARKING_CLOSED, ZH_NO_PARKING, True, True, True, False),
    ("zh one excerpt, one complete post", ZH_PARKING_CLOSED, ZH_NO_PARKING, False, True, True, False),
    ("en re-crawl, four edits spread", EN_TRIP, EN_TRIP_EDITED, True, True, False, True),
    ("zh re-crawl, three edits spread", ZH_TRIP, ZH_TRIP_EDITED, True, True, False, True),
    ("en complete posts, last chars differ", EN_OUTAGE, EN_OUTAGE.replace("14:05", "14:35"), False, False, True,
     True),
    ("zh complete posts, last chars differ", ZH_OUTAGE, ZH_OUTAGE[:-2] + "11", False, False, True, True),
    ("zh the same, one side an excerpt", ZH_OUTAGE, ZH_OUTAGE[:-2] + "11", False, True, True, False),
]


def _table(rows, *, truncated=True):
    """(band, doc_id, text, truncated) tuples -> a band-group table; no ``truncated`` column if not ``truncated``."""
    band, ids, texts, flags = zip(*rows, strict=True)
    columns = {"_band": pa.array(band, pa.int64()), "doc_id": pa.array(ids, pa.int64()),
               "length": pa.array([len(t) for t in texts], pa.int32()), "text": list(texts)}
    if truncated:
        columns["truncated"] = pa.array(flags, pa.bool_())
    return pa.table(columns)


@pytest.mark.parametrize(("case", "left", "right", "left_cut", "right_cut", "divergent", "kept"), PAIRS,
                         ids=[p[0] for p in PAIRS])
def test_tail_rule_keeps_recrawls_and_drops_different_endings_of_excerpts(
        case, left, right, left_cut, right_cut, divergent, kept):
    # Whole-text Jaccard calls every one of these a near-duplicate: the rule is what separates them.
    assert jaccard(pa.array([left]), pa.array([right]), K)[0] >= THRESHOLD
    assert tail_divergent(pa.array([left]), pa.array([right]), k=K).tolist() == [divergent]
    assert tail_divergent(pa.array([right]), pa.array([left]), k=K).tolist() == [divergent]
    pairs = group_pairs(_table([(7, 1, left, left_cut), (7, 2, right, right_cut)]), k=K, threshold=THRESHOLD)
    assert pairs.num_rows == int(kept)
    if kept:
        assert pairs.column("similarity")[0].as_py() >= THRESHOLD


@pytest.mark.parametrize(("left", "right"), [(EN_SUNDAY_OPEN, EN_SUNDAY_CLOSED), (ZH_PARKING_CLOSED, ZH_NO_PARKING)])
def test_different_endings_share_about_nine_tenths_of_their_text(left, right):
    assert len(os.path.commonprefix([left, right])) >= 0.87 * max(len(left), len(right))


TAILS = [  # (case, left, right, divergent at k=4)
    ("identical", EN_TRIP, EN_TRIP, False),
    ("an excerpt of the other", EN_TRIP[:150], EN_TRIP, False),
    ("an empty text", "", EN_TRIP, False),
    ("last character differs", ZH_TRIP[:80] + "好", ZH_TRIP[:80] + "差", True),
    ("characters differ in their last UTF-8 byte", ZH_TRIP[:60] + "文", ZH_TRIP[:60] + "斗", True),
    ("emoji differ in their last UTF-8 byte", "Great day 🙂 see you", "Great day 🙃 see you", False),
    ("one late edit, the re-crawl cut 20 chars later", ZH_TRIP[:200], (ZH_TRIP[:180] + "X" + ZH_TRIP[181:])[:220],
     False),
    ("different endings", EN_SUNDAY_OPEN, EN_SUNDAY_CLOSED, True),
]


@pytest.mark.parametrize(("case", "left", "right", "divergent"), TAILS, ids=[t[0] for t in TAILS])
def test_tail_divergent_edges(case, left, right, divergent):
    assert tail_divergent(pa.array([left]), pa.array([right]), k=K).tolist() == [divergent]
    assert tail_divergent(pa.array([right], pa.large_string()), pa.array([left]), k=K).tolist() == [divergent]


def test_tail_divergent_takes_chunked_and_empty_arrays():
    chunked = pa.chunked_array([[EN_SUNDAY_OPEN], [EN_TRIP]])
    assert tail_divergent(chunked, pa.array([EN_SUNDAY_CLOSED, EN_TRIP_EDITED]), k=K).tolist() == [True, False]
    empty = tail_divergent(pa.array([], pa.string()), pa.array([], pa.large_string()), k=K)
    assert empty.dtype == np.bool_ and empty.size == 0


def test_the_cut_to_the_shorter_remainder_is_what_keeps_a_longer_recrawl():
    # Uncut, the remainders after the late edit share too few shingles (the re-crawl's extra 20
    # characters are not in the excerpt at all): the rule compares only where both have text.
    short, long = ZH_TRIP[:200], (ZH_TRIP[:180] + "X" + ZH_TRIP[181:])[:220]
    assert jaccard(pa.array([short[180:]]), pa.array([long[180:]]), K)[0] < 0.5
    assert not tail_divergent(pa.array([short]), pa.array([long]), k=K)[0]


def _python_jaccard(a: str, b: str, k: int) -> float:
    sa, sb = ({t[i:i + k] for i in range(len(t) - k + 1)} for t in (a, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def test_tails_diverge_matches_python_code_point_slices_with_and_without_the_shortcut():
    pairs = [("中文数据清洗A", "中斗数据清洗A"), ("a🙂bcdef", "a🙃bcdefgh"), ("same", "same"), ("abc", "abcd"),
             ("", "zz"), ("abcdefgh", "abXdefghijk"), ("x中yyyy", "x中zyyy"), ("ab" * 20, "ab" * 15 + "ba" * 5),
             ("Xbcdefghijklmnopqrstuvwxyz", "Ybcdefghijklmnopqrstuvwxyz"), (EN_TRIP, EN_TRIP_EDITED),
             (EN_SUNDAY_OPEN, EN_SUNDAY_CLOSED), (ZH_TRIP[:200], (ZH_TRIP[:180] + "X" + ZH_TRIP[181:])[:220])]
    texts = pa.array(["skip"] + [t for pair in pairs for t in pair]).slice(1)  # a slice does not start at byte 0
    windows = _window_hashes(texts, 3)
    offsets, hashes = shingle_sets(texts, 3)
    chars = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    left = np.arange(0, 2 * len(pairs), 2)
    exact = pair_common_counts(offsets, hashes, left, left + 1)
    for resync in (0.0, 0.3, 0.5, 0.8, 1.0):
        want = []
        for a, b in pairs:
            same = len(os.path.commonprefix([a, b]))  # in code points, as the kernel's back-off must give
            keep = min(len(a), len(b)) - same
            want.append(keep > 0 and _python_jaccard(a[same:same + keep], b[same:same + keep], 3) < resync)
        # Any lower bound on the shared shingles (none, half, all) and upper bound on the set
        # sizes (window counts, exact) gives the same answers: the shortcut only skips work.
        for sizes, common in ((np.diff(windows[0]), np.zeros_like(exact)), (np.diff(offsets), exact // 2),
                              (np.diff(offsets), exact)):
            got = tails_diverge(*utf8_buffers(texts), chars, *windows, sizes, left, left + 1, common, 3, resync)
            assert got.tolist() == want, resync


def test_group_pairs_names_loser_winner_and_the_exact_jaccard():
    # k=2 shingles, by hand: abcdef {ab bc cd de ef}, abcdefg adds fg: 5/6; uvwxyz and uvwxyq
    # share {uv vw wx xy} of 6: 4/6; abXdef shares {ab de ef} with both abc… texts: 3/7, 3/8.
    rows = [(1, 10, "abcdef", False), (1, 20, "abcdefg", False), (1, 50, "abXdef", False),
            (2, 30, "uvwxyz", None), (2, 40, "uvwxyq", None)]  # null counts as complete
    table = _table(rows)
    pairs = group_pairs(table, k=2, threshold=0.6)
    assert pairs.schema == pa.schema([("loser", pa.int64()), ("winner", pa.int64()), ("similarity", pa.float64())])
    # The shorter text loses; of equal lengths, the larger doc_id.
    assert pairs.to_pylist() == [{"loser": 10, "winner": 20, "similarity": pytest.approx(5 / 6)},
                                 {"loser": 40, "winner": 30, "similarity": pytest.approx(4 / 6)}]
    # uvwxyz / uvwxyq differ in their last character: once one is an excerpt, they are two posts.
    cut = table.set_column(4, "truncated", pa.array([False, False, False, None, True]))
    assert group_pairs(cut, k=2, threshold=0.6).column("loser").to_pylist() == [10]
    empty = group_pairs(table.slice(0, 0), k=2, threshold=0.6)
    assert empty.num_rows == 0 and empty.schema == pairs.schema


def test_group_losers_without_truncated_is_unchanged():
    rows = [(1, 1, EN_SUNDAY_OPEN, True), (1, 2, EN_SUNDAY_CLOSED, True),  # 237 and 239 characters: 1 loses
            (2, 3, ZH_TRIP, True), (2, 4, ZH_TRIP_EDITED, True),  # same length: the larger id, 4, loses
            (3, 5, ZH_PARKING_CLOSED, True), (3, 6, ZH_NO_PARKING, True), (3, 3, ZH_TRIP, True)]
    plain = _table(rows, truncated=False)
    assert group_losers(plain, k=K, threshold=THRESHOLD).to_pylist() == [1, 4, 6]
    assert group_pairs(plain, k=K, threshold=THRESHOLD).column("loser").to_pylist() == [1, 4, 6]
    # With the column, the two pairs of different endings are no pairs at all.
    assert group_losers(_table(rows), k=K, threshold=THRESHOLD).to_pylist() == [4]
    assert group_losers(plain.slice(0, 0), k=K, threshold=THRESHOLD).to_pylist() == []


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: tail_divergent(pa.array(["a"]), pa.array(["a", "b"]), k=K), ValueError, "1 left texts but 2"),
    (lambda: tail_divergent(pa.array(["a", None]), pa.array(["a", "b"]), k=K), ValueError, "null"),
    (lambda: tail_divergent(pa.array([1]), pa.array(["a"]), k=K), TypeError, "string array"),
    (lambda: tail_divergent(pa.array(["a"]), pa.array(["a"]), k=0), ValueError, "shingle size"),
    (lambda: tail_divergent(pa.array(["a"]), pa.array(["a"]), k=K, resync=1.5), ValueError, "resync"),
    (lambda: group_pairs(pa.table({"doc_id": [1]}), k=K, threshold=THRESHOLD), ValueError, "missing column"),
    (lambda: group_pairs(_table([(1, 1, "abcd", True)]).set_column(4, "truncated", pa.array(["yes"])),
                         k=K, threshold=THRESHOLD), ValueError, "'truncated' must be boolean"),
])
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()
