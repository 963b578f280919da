# Shared by the decomposition tools' patch.py (stream, wgmma): a copy of a
# kernel file with snippets replaced, each of which must occur exactly once
# (so a patch fails loudly when the source it targets has changed).
#   python3 patch.py SOURCE DESTINATION
import sys


class Patch:
    def __init__(self):
        self.source, self.destination = sys.argv[1], sys.argv[2]
        self.text = open(self.source).read()

    def rep(self, old, new):
        assert self.text.count(old) == 1, old
        self.text = self.text.replace(old, new, 1)

    def write(self):
        open(self.destination, "w").write(self.text)
