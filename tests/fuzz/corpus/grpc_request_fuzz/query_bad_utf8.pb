
abcÿş cafÃ