import XCTest

final class InfoPlistTests: XCTestCase {
    func testTheAppHasAVersion() {
        XCTAssertNotNil(Bundle.main.object(forInfoDictionaryKey: "CFBundleShortVersionString"))
    }
}
