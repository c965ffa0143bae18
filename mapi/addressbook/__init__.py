"""The address book: the GAL built from the user directory (:mod:`.gal`), the NSPI
operations on it as a sans-IO core (:mod:`.nspi`) and its DCE/RPC services, NSPI and
the referral service (:mod:`.service`). See docs/addressbook.md."""
