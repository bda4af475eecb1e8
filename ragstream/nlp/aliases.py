"""A small built-in alias table for places: the abbreviations news wires use (AP style state
abbreviations, postal codes where they are unambiguous, a few country short forms).

General knowledge written down once, not learned from any benchmark; it maps a normalised LOC key
to the key of the full name, so "S.C.", "South Carolina" and "SC" are one node in every document.
Ambiguous short forms are left out: postal codes that are English words ("IN", "OR", "ME", "OK",
"HI") or name something else as often ("LA", "CA", "DE").
"""

from __future__ import annotations

from ragstream.nlp.normalise import normalise

# full name: AP abbreviation(s) and unambiguous postal codes
_US_STATES = {
    "Alabama": ("Ala.", "AL"), "Arizona": ("Ariz.", "AZ"), "Arkansas": ("Ark.", "AR"),
    "California": ("Calif.", "Cal."), "Colorado": ("Colo.", "CO"),
    "Connecticut": ("Conn.", "CT"), "Delaware": ("Del.",), "Florida": ("Fla.", "FL"),
    "Georgia": ("Ga.", "GA"), "Illinois": ("Ill.", "IL"), "Indiana": ("Ind.",),
    "Kansas": ("Kan.", "Kans.", "KS"), "Kentucky": ("Ky.", "KY"), "Louisiana": ("La.",),
    "Maryland": ("Md.", "MD"), "Massachusetts": ("Mass.", "MA"), "Michigan": ("Mich.", "MI"),
    "Minnesota": ("Minn.", "MN"), "Mississippi": ("Miss.", "MS"), "Missouri": ("Mo.", "MO"),
    "Montana": ("Mont.", "MT"), "Nebraska": ("Neb.", "Nebr.", "NE"), "Nevada": ("Nev.", "NV"),
    "New Hampshire": ("N.H.", "NH"), "New Jersey": ("N.J.", "NJ"), "New Mexico": ("N.M.", "NM"),
    "New York": ("N.Y.", "NY"), "North Carolina": ("N.C.", "NC"),
    "North Dakota": ("N.D.", "N.Dak.", "ND"), "Oklahoma": ("Okla.",), "Oregon": ("Ore.", "Oreg."),
    "Pennsylvania": ("Pa.", "Penn.", "PA"), "Rhode Island": ("R.I.", "RI"),
    "South Carolina": ("S.C.", "SC"), "South Dakota": ("S.D.", "S.Dak.", "SD"),
    "Tennessee": ("Tenn.", "TN"), "Texas": ("Tex.", "TX"), "Vermont": ("Vt.", "VT"),
    "Virginia": ("Va.", "VA"), "Washington": ("Wash.",), "West Virginia": ("W.Va.", "W.V.", "WV"),
    "Wisconsin": ("Wis.", "Wisc.", "WI"), "Wyoming": ("Wyo.", "WY"),
}

_COUNTRIES = {
    "United States": ("U.S.", "US", "U.S.A.", "USA", "United States of America"),
    "United Kingdom": ("U.K.", "UK", "Britain", "Great Britain"),
    "Netherlands": ("Holland",),
    "Soviet Union": ("USSR", "U.S.S.R."),
    "United Arab Emirates": ("UAE", "U.A.E."),
}


def _table() -> dict[str, str]:
    table = {}
    for full, short_forms in (*_US_STATES.items(), *_COUNTRIES.items()):
        for short in short_forms:
            table[normalise(short, "LOC")] = normalise(full, "LOC")
    return table


LOC_ALIASES: dict[str, str] = _table()


def canonical_key(cls: str, key: str) -> str:
    """The key of the full name for a known short form of a place; any other key unchanged."""
    return LOC_ALIASES.get(key, key) if cls == "LOC" else key
