"""pattern's ``singularize`` (pattern.en), which the original CHAIR applies to every word of a caption.

Rohrbach et al.'s ``utils/chair.py`` (github.com/LisaAnne/Hallucination, 6e4d33c, lines 5 and 107) runs
``singularize(w)`` on each token; its requirements.txt pins pattern==3.6, which no longer installs on current Python.
This is that function transcribed from pattern's source, github.com/clips/pattern d25511f,
pattern/text/en/inflect.py lines 123-134 (plural_prepositions) and 477-636 (the rules, the four word lists and
``singularize``); that section last changed in 2017 (e18fd2a), before the 3.6 release. Nothing is corrected, so its
quirks are CHAIR's: "bus" -> "bu" (rule ``s$``), "ties" -> "ty" (``ies$``, the "^tie" entry never matches),
"glass" -> "glas", "doggies" and "collies" stay as they are (the ``singular_ie`` branch returns the word unchanged),
and a word that is the end of an uninflected or uncountable word ("wine" of "swine") is returned unchanged.

Copyright (c) 2011-2013 University of Antwerp, Belgium (pattern, BSD 3-Clause licence: redistributions must retain this
notice and the licence's disclaimer, github.com/clips/pattern LICENSE.txt). The singularisation rules are adapted there
from Bermi Ferrer's Inflector for Python, Copyright (c) 2006 Bermi Ferrer Martinez: "Permission is hereby granted, free
of charge, to any person obtaining a copy of this software to deal in this software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of this
software, and to permit persons to whom this software is furnished to do so". THIS SOFTWARE IS PROVIDED "AS IS",
WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR
ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

from __future__ import annotations

import re

# inflect.py lines 123-134: a hyphenated word whose second part is one of these is singularised in its first part.
PLURAL_PREPOSITIONS = frozenset((
    "about", "before", "during", "of", "till", "above", "behind", "except", "off", "to", "across", "below", "for",
    "on", "under", "after", "beneath", "from", "onto", "until", "among", "beside", "in", "out", "unto", "around",
    "besides", "into", "over", "upon", "at", "between", "near", "since", "with", "athwart", "betwixt", "beyond",
    "but", "by",
))

# inflect.py lines 477-522, in their order (the first that matches applies).
_RULES = [
    (r"(?i)(.)ae$", "\\1a"),
    (r"(?i)(.)itis$", "\\1itis"),
    (r"(?i)(.)eaux$", "\\1eau"),
    (r"(?i)(quiz)zes$", "\\1"),
    (r"(?i)(matr)ices$", "\\1ix"),
    (r"(?i)(ap|vert|ind)ices$", "\\1ex"),
    (r"(?i)^(ox)en", "\\1"),
    (r"(?i)(alias|status)es$", "\\1"),
    (r"(?i)([octop|vir])i$", "\\1us"),
    (r"(?i)(cris|ax|test)es$", "\\1is"),
    (r"(?i)(shoe)s$", "\\1"),
    (r"(?i)(o)es$", "\\1"),
    (r"(?i)(bus)es$", "\\1"),
    (r"(?i)([m|l])ice$", "\\1ouse"),
    (r"(?i)(x|ch|ss|sh)es$", "\\1"),
    (r"(?i)(m)ovies$", "\\1ovie"),
    (r"(?i)(.)ombies$", "\\1ombie"),
    (r"(?i)(s)eries$", "\\1eries"),
    (r"(?i)([^aeiouy]|qu)ies$", "\\1y"),
    (r"([aeo]l)ves$", "\\1f"),
    (r"([^d]ea)ves$", "\\1f"),
    (r"arves$", "arf"),
    (r"erves$", "erve"),
    (r"([nlw]i)ves$", "\\1fe"),
    (r"(?i)([lr])ves$", "\\1f"),
    (r"([aeo])ves$", "\\1ve"),
    (r"(?i)(sive)s$", "\\1"),
    (r"(?i)(tive)s$", "\\1"),
    (r"(?i)(hive)s$", "\\1"),
    (r"(?i)([^f])ves$", "\\1fe"),
    (r"(?i)(^analy)ses$", "\\1sis"),
    (r"(?i)((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", "\\1\\2sis"),
    (r"(?i)(.)opses$", "\\1opsis"),
    (r"(?i)(.)yses$", "\\1ysis"),
    (r"(?i)(h|d|r|o|n|b|cl|p)oses$", "\\1ose"),
    (r"(?i)(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", "\\1ose"),
    (r"(?i)(.)oses$", "\\1osis"),
    (r"(?i)([ti])a$", "\\1um"),
    (r"(?i)(n)ews$", "\\1ews"),
    (r"(?i)s$", ""),
]
SINGULAR_RULES = [(re.compile(pattern), inflection) for pattern, inflection in _RULES]

# inflect.py lines 527-539.
SINGULAR_UNINFLECTED = frozenset((
    "bison", "debris", "headquarters", "pincers", "trout", "bream", "diabetes", "herpes", "pliers", "tuna",
    "breeches", "djinn", "high-jinks", "proceedings", "whiting", "britches", "eland", "homework", "rabies",
    "wildebeest", "carp", "elk", "innings", "salmon", "chassis", "flounder", "jackanapes", "scissors", "christmas",
    "gallows", "mackerel", "series", "clippers", "georgia", "measles", "shears", "cod", "graffiti", "mews", "species",
    "contretemps", "mumps", "swine", "corps", "news", "swiss",
))
# inflect.py lines 540-546.
SINGULAR_UNCOUNTABLE = frozenset((
    "advice", "equipment", "happiness", "luggage", "news", "software", "bread", "fruit", "information", "mathematics",
    "progress", "understanding", "butter", "furniture", "ketchup", "mayonnaise", "research", "water", "cheese",
    "garbage", "knowledge", "meat", "rice", "electricity", "gravel", "love", "mustard", "sand",
))
# inflect.py lines 547-556 ("^pie" and "^tie" are tested with str.endswith, so they never match).
SINGULAR_IE = frozenset((
    "alergie", "cutie", "hoagie", "newbie", "softie", "veggie", "auntie", "doggie", "hottie", "nightie", "sortie",
    "weenie", "beanie", "eyrie", "indie", "oldie", "stoolie", "yuppie", "birdie", "freebie", "junkie", "^pie",
    "sweetie", "zombie", "bogie", "goonie", "laddie", "pixie", "techie", "bombie", "groupie", "laramie", "quickie",
    "^tie", "collie", "hankie", "lingerie", "reverie", "toughie", "cookie", "hippie", "meanie", "rookie", "valkyrie",
))
# inflect.py lines 557-599 (no key is the end of another, so the order they are tried in does not matter).
SINGULAR_IRREGULAR = {
    "atlantes": "atlas", "atlases": "atlas", "axes": "axe", "beeves": "beef", "brethren": "brother",
    "children": "child", "corpora": "corpus", "corpuses": "corpus", "ephemerides": "ephemeris", "feet": "foot",
    "ganglia": "ganglion", "geese": "goose", "genera": "genus", "genii": "genie", "graffiti": "graffito",
    "helves": "helve", "kine": "cow", "leaves": "leaf", "loaves": "loaf", "men": "man", "mongooses": "mongoose",
    "monies": "money", "moves": "move", "mythoi": "mythos", "numena": "numen", "occipita": "occiput",
    "octopodes": "octopus", "opera": "opus", "opuses": "opus", "our": "my", "oxen": "ox", "penes": "penis",
    "penises": "penis", "people": "person", "sexes": "sex", "soliloquies": "soliloquy", "teeth": "tooth",
    "testes": "testis", "trilbys": "trilby", "turves": "turf", "zoa": "zoon",
}


def singularize(word: str) -> str:
    """pattern.en's ``singularize(word)`` with its defaults (inflect.py lines 602-636), step for step."""
    if "-" in word:  # mothers-in-law -> mother-in-law
        parts = word.split("-")
        if len(parts) > 1 and parts[1] in PLURAL_PREPOSITIONS:
            return singularize(parts[0]) + "-" + "-".join(parts[1:])
    if word.endswith("'"):  # dogs' -> dog's (and a lone "'" -> "'s")
        return singularize(word[:-1]) + "'s"
    w = word.lower()
    if any(x.endswith(w) for x in SINGULAR_UNINFLECTED) or any(x.endswith(w) for x in SINGULAR_UNCOUNTABLE):
        return word
    if any(w.endswith(x + "s") for x in SINGULAR_IE):
        return w
    for x, singular in SINGULAR_IRREGULAR.items():
        if w.endswith(x):
            return re.sub("(?i)" + x + "$", singular, word)
    for suffix, inflection in SINGULAR_RULES:
        m = suffix.search(word)
        if m:
            for k, group in enumerate(m.groups()):
                if group is None:
                    inflection = inflection.replace("\\" + str(k + 1), "")
            return suffix.sub(inflection, word)
    return word
