// Each generated translation unit includes exactly one public header.
int main() { return 0; }
