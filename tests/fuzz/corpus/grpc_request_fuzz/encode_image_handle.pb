
abc