// Each generated translation unit includes exactly one header (public or detail/).
int main() { return 0; }
